// Every YAML example in README.md and docs/*.md is checked, so a documented example can never be
// invalid:
// - a tetherd configuration runs through `tetherd --check-config`, the real binary, with every
//   file it names (secrets, tokens, keys, DTLS key files) present and well-formed: each absolute
//   path in the example is swapped for a file in a temporary directory, written by its kind;
// - a Prometheus file (scrape config, alert rules) must parse, and every tether_* series its
//   rules use must be a metric tetherd exposes;
// - a fenced block that is a tetherd configuration but not marked ```yaml is an error (it would
//   escape the check).
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_error.h"
#include "gateway/admin/metrics.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

std::string SourceDir() {
  const char* env = std::getenv("TETHER_SOURCE_DIR");
  return env ? env : TETHER_SOURCE_DIR_FALLBACK;
}

struct Block {
  std::string file;  // relative to the source dir
  int line = 0;      // of the opening fence
  std::string lang;  // what follows ``` ("" when nothing)
  std::string text;
  std::string where() const { return file + ":" + std::to_string(line); }
};

std::vector<Block> FencedBlocks() {
  std::vector<std::string> files = {"README.md"};
  for (const auto& e : std::filesystem::directory_iterator(SourceDir() + "/docs")) {
    if (e.path().extension() == ".md") files.push_back("docs/" + e.path().filename().string());
  }
  std::vector<Block> out;
  for (const auto& f : files) {
    std::ifstream in(SourceDir() + "/" + f);
    std::string line;
    int n = 0;
    Block* open = nullptr;
    while (std::getline(in, line)) {
      ++n;
      std::string trimmed = line.substr(std::min(line.find_first_not_of(' '), line.size()));
      if (trimmed.rfind("```", 0) != 0) {
        if (open) open->text += line + "\n";
        continue;
      }
      if (open) {
        open = nullptr;
      } else {
        out.push_back({f, n, trimmed.substr(3), ""});
        open = &out.back();
      }
    }
    EXPECT_EQ(open, nullptr) << f << ": a fenced block is not closed";
  }
  return out;
}

const std::set<std::string> kTetherSections = {"gateway", "device", "dtls", "store", "upstream",
                                               "admin",   "log",    "apps", "routes"};

bool IsTetherConfig(const YAML::Node& n) {
  if (!n.IsMap() || n.size() == 0) return false;
  for (auto it = n.begin(); it != n.end(); ++it) {
    if (!kTetherSections.count(it->first.Scalar())) return false;
  }
  return true;
}

bool IsPrometheus(const YAML::Node& n) { return n.IsMap() && (n["groups"] || n["scrape_configs"]); }

// Writes a well-formed file of the kind the configuration expects at `path`.
void WriteFileOfKind(const std::string& path, FileRef::Kind kind) {
  std::ofstream out(path);
  switch (kind) {
    case FileRef::Kind::kHmacSecret: out << "an-hmac-secret-of-32-characters!\n"; break;
    case FileRef::Kind::kDatabaseSecret: out << "database-secret\n"; break;
    case FileRef::Kind::kAccessToken: out << "ya29.access-token\n"; break;
    case FileRef::Kind::kServiceAccount: {
      ShellResult key = Shell("openssl genrsa 2048 2>/dev/null");
      ASSERT_EQ(key.status, 0) << "openssl genrsa";
      std::string pem;
      for (char c : key.out) pem += c == '\n' ? std::string("\\n") : std::string(1, c);
      out << "{\"type\":\"service_account\",\"client_email\":\"gw@example.iam.gserviceaccount.com\","
             "\"token_uri\":\"https://oauth2.googleapis.com/token\",\"private_key\":\""
          << pem << "\"}\n";
      break;
    }
  }
}

// The example with every absolute path replaced by one under `dir`, and the files it names
// written there.
struct Prepared {
  std::string yaml;
  std::string error;  // Config::Parse refused the example itself
};

Prepared Prepare(const Block& b, const std::string& dir) {
  Prepared p{b.text, ""};
  // Every absolute path-like scalar (/etc/..., /var/...): made to live under dir.
  std::regex abs(R"((^|[\s:\[\{,'"])(/(?:etc|var|opt|srv|home|run)/[A-Za-z0-9._/-]+))");
  std::smatch m;
  std::string out, rest = p.yaml;
  while (std::regex_search(rest, m, abs)) {
    out += rest.substr(0, static_cast<size_t>(m.position(2)));
    std::string flat = m[2].str();
    std::replace(flat.begin(), flat.end(), '/', '_');
    out += dir + "/" + flat;
    rest = m.suffix();
  }
  p.yaml = out + rest;
  Config c;
  try {
    c = Config::Parse(p.yaml, b.where());
  } catch (const ConfigError& e) {
    p.error = e.what();
    return p;
  }
  for (const FileRef& f : c.files) WriteFileOfKind(f.path, f.kind);
  if (c.dtls && !c.dtls->keys_file.empty()) std::ofstream(c.dtls->keys_file) << "sensor-1: key-one-secret\n";
  if (c.dtls && !c.dtls->master_key_file.empty()) std::ofstream(c.dtls->master_key_file) << "a-master-key-of-32-characters!!!\n";
  return p;
}

TEST(DocExamples, EveryTetherConfigurationPassesCheckConfigWithItsFiles) {
  int checked = 0;
  for (const Block& b : FencedBlocks()) {
    if (b.lang != "yaml" && b.lang != "yml") continue;
    YAML::Node n;
    try {
      n = YAML::Load(b.text);
    } catch (const YAML::Exception& e) {
      ADD_FAILURE() << b.where() << ": not YAML: " << e.what();
      continue;
    }
    if (!IsTetherConfig(n)) {
      EXPECT_TRUE(IsPrometheus(n)) << b.where() << ": a YAML example that is neither a tetherd configuration nor a "
                                   << "Prometheus file cannot be checked";
      continue;
    }
    std::string dir = ::testing::TempDir() + "/doc-example-" + std::to_string(getpid()) + "-" + std::to_string(checked);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    Prepared p = Prepare(b, dir);
    EXPECT_EQ(p.error, "") << b.where() << ": the example is not a valid configuration";
    std::string file = dir + "/tether.yaml";
    std::ofstream(file) << p.yaml;
    ShellResult r = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + file);
    EXPECT_EQ(r.status, 0) << b.where() << ": tetherd --check-config refused the example:\n" << r.out << "\n" << p.yaml;
    std::filesystem::remove_all(dir);
    ++checked;
  }
  EXPECT_GE(checked, 6) << "README.md and docs/ hold at least six configuration examples";
}

TEST(DocExamples, PrometheusExamplesUseOnlyExposedMetrics) {
  MetricsRegistry registry;
  TetherMetrics catalog(registry);
  int rules = 0;
  for (const Block& b : FencedBlocks()) {
    if (b.lang != "yaml" && b.lang != "yml") continue;
    YAML::Node n = YAML::Load(b.text);
    if (!IsPrometheus(n)) continue;
    for (const auto& g : n["groups"]) {
      for (const auto& rule : g["rules"]) {
        ASSERT_TRUE(rule["alert"] && rule["expr"]) << b.where() << ": a rule needs alert and expr";
        std::string expr = rule["expr"].as<std::string>();
        std::regex metric(R"(tether_[a-z_]+)");
        for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric); it != std::sregex_iterator(); ++it) {
          EXPECT_NE(registry.Find(it->str()), nullptr)
              << b.where() << ": alert " << rule["alert"].as<std::string>() << " uses " << it->str()
              << ", which tetherd does not expose";
        }
        ++rules;
      }
    }
  }
  EXPECT_GE(rules, 10);
}

TEST(DocExamples, ConfigurationsAreMarkedYamlSoTheyAreChecked) {
  for (const Block& b : FencedBlocks()) {
    if (b.lang == "yaml" || b.lang == "yml") continue;
    try {
      EXPECT_FALSE(IsTetherConfig(YAML::Load(b.text))) << b.where() << ": a configuration example not marked ```yaml";
    } catch (const YAML::Exception&) {  // not YAML: shell, JSON, text
    }
  }
}

}  // namespace
}  // namespace tether::testing
