// ReadSecretFile: refuses what others could change (mode o+w, a directory anyone may write to
// without the sticky bit, also behind a symlink, not a regular file), warns once about what others
// can read, and never puts the content in a message.
#include "gateway/secret_file.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tether {
namespace {

class SecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/secret-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    chmod(dir_.c_str(), 0755);
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_);
    std::system(("rm -rf " + dir_).c_str());
  }
  std::string Write(const std::string& name, mode_t mode, const std::string& text = "s3cret-content-xyz\n") {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    chmod(path.c_str(), mode);
    return path;
  }
  std::string ErrorOf(const std::string& path) {
    try {
      ReadSecretFile(path);
    } catch (const SecretFileError& e) {
      EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << "content in the message";
      return e.what();
    }
    return "";
  }
  std::string dir_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(SecretFileTest, PrivateFileIsReadSilently) {
  EXPECT_EQ(ReadSecretFile(Write("ok", 0600)), "s3cret-content-xyz\n");
  EXPECT_EQ(ReadSecretFile(Write("group", 0640)), "s3cret-content-xyz\n");
  EXPECT_EQ(log_.str(), "");
}

TEST_F(SecretFileTest, WorldWritableIsRefused) {
  const std::string path = Write("ww", 0666);
  EXPECT_EQ(ErrorOf(path), path + ": writable by every user (mode 0666): anyone could replace the secret; chmod o-w " +
                               path + " (recommended: owner root, group tether, mode 0640)");
  EXPECT_NE(ErrorOf(Write("ww2", 0602)), "");
}

TEST_F(SecretFileTest, WorldReadableWarnsOncePerMode) {
  const std::string path = Write("wr", 0644);
  EXPECT_EQ(ReadSecretFile(path), "s3cret-content-xyz\n");
  EXPECT_EQ(ReadSecretFile(path), "s3cret-content-xyz\n");
  const std::string log = log_.str();
  EXPECT_NE(log.find(path + ": readable by every user (mode 0644)"), std::string::npos) << log;
  EXPECT_EQ(log.find("readable by every user"), log.rfind("readable by every user")) << "warned twice: " << log;
  EXPECT_EQ(log.find("s3cret"), std::string::npos);
}

TEST_F(SecretFileTest, DirectoryAnyoneMayWriteToIsRefusedUnlessSticky) {
  const std::string open_dir = dir_ + "/open";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  std::ofstream(open_dir + "/key") << "s3cret-content-xyz\n";
  chmod((open_dir + "/key").c_str(), 0600);
  EXPECT_NE(ErrorOf(open_dir + "/key").find("its directory " + open_dir + " is writable by every user (mode 0777, "
                                            "no sticky bit)"),
            std::string::npos)
      << ErrorOf(open_dir + "/key");
  // Behind a symlink from a safe directory: the target's directory still counts.
  ASSERT_EQ(symlink((open_dir + "/key").c_str(), (dir_ + "/link").c_str()), 0);
  EXPECT_NE(ErrorOf(dir_ + "/link").find("its directory " + open_dir), std::string::npos);
  // Sticky (like /tmp): others cannot rename or delete the owner's file.
  ASSERT_EQ(chmod(open_dir.c_str(), 01777), 0);
  EXPECT_EQ(ReadSecretFile(open_dir + "/key"), "s3cret-content-xyz\n");
  EXPECT_EQ(ReadSecretFile(dir_ + "/link"), "s3cret-content-xyz\n");
}

TEST_F(SecretFileTest, MissingOrNotARegularFile) {
  EXPECT_EQ(ErrorOf(dir_ + "/none"), "cannot read " + dir_ + "/none: No such file or directory");
  EXPECT_EQ(ErrorOf(dir_), dir_ + ": not a regular file");
  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ErrorOf(fifo), fifo + ": not a regular file") << "must not block on a FIFO";
}

TEST_F(SecretFileTest, ValueIsTheContentWithoutTrailingLineBreaks) {
  EXPECT_EQ(ReadSecretValue(Write("lf", 0600, "0123456789abcdef\n")), "0123456789abcdef");
  EXPECT_EQ(ReadSecretValue(Write("crlf", 0600, "0123456789abcdef\r\n\n")), "0123456789abcdef");
  EXPECT_EQ(ReadSecretValue(Write("space", 0600, "0123456789abcdef \n")), "0123456789abcdef ")
      << "a trailing space is part of the secret";
  EXPECT_EQ(ReadSecretValue(Write("inner", 0600, "line1\nline2\n")), "line1\nline2");
  EXPECT_THROW(ReadSecretValue(Write("open", 0666)), SecretFileError) << "refused as ReadSecretFile refuses";
}

}  // namespace
}  // namespace tether
