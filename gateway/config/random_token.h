// RandomToken: session tokens, which are capabilities, drawn from getrandom(2).
#pragma once

#include <cstddef>
#include <string>

namespace tether {

// n characters from [A-Za-z0-9], without modulo bias.
std::string RandomToken(size_t n);

}  // namespace tether
