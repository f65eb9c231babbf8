// ReadSecretFile: the one way tetherd reads a file that holds a secret — the DTLS keys
// (dtls.keys_file, dtls.master_key_file), app HMAC secrets (apps[].auth.secret_file) and the cloud
// credentials (upstream.secret_file, access_token_file, service_account_file).
//
// Like ssh with a private key, it refuses a file that others could change and warns about one that
// others can read. Checked on the file actually opened (fstat of the descriptor, after symlinks):
//  - refused: not a regular file; writable by every user (mode o+w); in a directory every user may
//    write to without the sticky bit (anyone could put another file in its place) — the
//    directory of the path as written and, for a symlink, of its target; unreadable; over 64 MiB.
//  - warned (spdlog, once per path and mode in a process): readable by every user (mode o+r).
// Errors and warnings name the path and the reason, never the content. Thread-safe.
#pragma once

#include <stdexcept>
#include <string>

namespace tether {

class SecretFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The whole content of `path`; throws SecretFileError (what(): "<path>: <why>" or "cannot read
// <path>: <errno text>").
std::string ReadSecretFile(const std::string& path);
// The secret a one-value file holds: its content without the trailing line breaks (\n, \r) an
// editor or `echo` leaves. Other bytes, trailing spaces included, are part of the secret. Throws as
// ReadSecretFile. Used for app HMAC secrets, the DTLS master key and `config check`'s look at
// every secret file, so the check sees what the daemon will use.
std::string ReadSecretValue(const std::string& path);
// A cloud credential (upstream.secret_file, access_token_file, service_account_file): the content
// without trailing whitespace (\n, \r, spaces). Throws as ReadSecretFile, and SecretFileError
// ("credentials file <path> is empty") when nothing is left.
std::string ReadCredentialFile(const std::string& path);

}  // namespace tether
