// Logging: spdlog to stderr. Under systemd (JOURNAL_STREAM set) lines carry the "<N>" syslog
// priority prefix journald understands and no timestamp (journald adds its own).
// Never log secrets: tokens, keys and credentials are logged only through Redact().
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

namespace tether {

// level: trace, debug, info, warn or error (validated by Config).
void SetupLogging(const std::string& level);
void SetLogLevel(const std::string& level);

// "abcd…(32 bytes)": enough to correlate, never enough to reuse.
std::string Redact(std::string_view secret);

}  // namespace tether
