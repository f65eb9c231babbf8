// RunCommand: runs a program to completion for an ops test and captures its output.
//
// No shell is involved: argv[0] is looked up on PATH. Output goes through temp files, so a
// chatty child never blocks on a pipe. A child still running at the deadline is SIGKILLed.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace tether::testing {

struct CommandResult {
  int exit_code = -1;  // exit status, 128+signal when killed, -1 when it could not start
  std::string out, err;
  bool timed_out = false;
};

CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::map<std::string, std::string>& env = {});

// A fresh empty directory under $TMPDIR (or /tmp); the caller removes it.
std::string MakeTempDir(const std::string& prefix);
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& text);

}  // namespace tether::testing
