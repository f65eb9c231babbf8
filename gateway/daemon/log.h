// Logging: spdlog to stderr. Under systemd (JOURNAL_STREAM set) lines carry the "<N>" syslog
// priority prefix journald understands and no timestamp (journald adds its own).
// Never log secrets: credentials, device auth tokens, session tokens and URLs carrying them stay
// out of every log line (tests/integration/ops_cloud_test.cc greps a debug-level log for them).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace tether {

// level: trace, debug, info, warn or error (validated by Config).
void SetupLogging(const std::string& level);
void SetLogLevel(const std::string& level);

}  // namespace tether
