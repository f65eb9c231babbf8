// The access-token-file credentials the upstream tests use: the file read as it is (tetherd reads
// it through ReadCredentialFile), and a refused re-read fails the test.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "upstream/credentials.h"

namespace tether::upstream::testing {

inline std::unique_ptr<Credentials> TestTokenFile(const std::string& path) {
  return MakeAccessTokenFile(
      path,
      [](const std::string& p) {
        std::ifstream in(p);
        return std::string(std::istreambuf_iterator<char>(in), {});
      },
      [](const std::string& why) { ADD_FAILURE() << why; });
}

}  // namespace tether::upstream::testing
