// tests/fakecloud refuses what Firebase refuses, with Firebase's status and error body
// (tests/fakecloud/firebase_rules.py names the source of each rule): paths and keys in URLs and
// bodies, size limits, server values, ETag headers, query parameters. Raw HTTP, so the exact
// status line, body and headers are checked.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "tests/upstream/fakecloud_process.h"

namespace tether::upstream {
namespace {

using nlohmann::json;
using testing::FakeCloud;

struct Answer {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

Answer Raw(const FakeCloud& cloud, const std::string& method, const std::string& target, const std::string& body = "",
           std::vector<std::string> headers = {}) {
  Answer a;
  CURL* c = curl_easy_init();
  std::string url = cloud.url() + target;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);  // send the path exactly as written
  if (method != "GET" && method != "DELETE") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
    static_cast<std::string*>(u)->append(p, s * n);
    return s * n;
  });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
    std::string line(p, s * n);
    if (auto colon = line.find(':'); colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
      while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
      (*static_cast<std::map<std::string, std::string>*>(u))[name] = value;
    }
    return s * n;
  });
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &a.headers);
  EXPECT_EQ(curl_easy_perform(c), CURLE_OK) << method << " " << target;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(c);
  return a;
}

// Firebase's error layout, byte for byte.
std::string ErrorBody(const std::string& message) { return "{\n  \"error\" : " + json(message).dump() + "\n}\n"; }

const std::string kInvalidPath = ErrorBody("Invalid path: Invalid token in path");
const std::string kInvalidJson = ErrorBody("Invalid data; couldn't parse JSON object, array, or value.");
std::string InvalidKeyAt(int line, int col) {
  return ErrorBody("Invalid data; couldn't parse key beginning at " + std::to_string(line) + ":" + std::to_string(col) +
                   ". Key value can't be empty or contain $ # [ ] / or .");
}

TEST(FakeCloudRules, EveryInvalidUrlSegmentIsRefusedAsFirebaseDoes) {
  FakeCloud cloud;
  // The old default presence path, encoded forbidden characters (# [ ] must be encoded to reach
  // the path at all), an encoded '/', control characters and a backslash, in any segment.
  for (const char* path : {"/.gateways/gw-1", "/tether/.info", "/a%2Fb", "/a$b", "/a%23b", "/a%5Bb", "/a%5Db",
                           "/x/a.b/y", "/a%01b", "/a%7Fb", "/a%5Cb", "/a%FFb"}) {
    for (const char* method : {"GET", "PUT", "PATCH", "DELETE"}) {
      Answer a = Raw(cloud, method, std::string(path) + ".json", R"({"k":1})");
      EXPECT_EQ(a.status, 400) << method << " " << path;
      EXPECT_EQ(a.body, kInvalidPath) << method << " " << path;
    }
  }
  EXPECT_TRUE(cloud.Control({{"op", "dump"}}).is_null()) << "nothing was written";
  // Valid keys with odd characters are data, decoded from their percent-encoding.
  EXPECT_EQ(Raw(cloud, "PUT", "/tether-gateways/gw-1.json", "1").status, 200);
  EXPECT_EQ(Raw(cloud, "PUT", "/odd%20key+%25/%E2%82%AC.json", "2").status, 200);
  EXPECT_EQ(cloud.Control({{"op", "dump"}}), json::parse(R"({"tether-gateways":{"gw-1":1},"odd key+%":{"€":2}})"));
}

TEST(FakeCloudRules, InvalidKeysInBodiesAreRefusedWithTheirPosition) {
  FakeCloud cloud;
  Answer a = Raw(cloud, "PUT", "/x.json", R"({"ok": {"a.b": 1}})");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(a.body, InvalidKeyAt(1, 9));
  a = Raw(cloud, "PUT", "/x.json", "{\n  \"fine\": 1,\n  \"bad$\": 2\n}");
  EXPECT_EQ(a.body, InvalidKeyAt(3, 3)) << "line and column of the key's opening quote";
  for (const char* body : {R"({"": 1})", R"({"a/b": 1})", R"({"a[": 1})", R"({"a]": 1})", R"({"#": 1})",
                           "{\"a\\u0001\": 1}", "{\"a\\u007f\": 1}", R"({".priority": 1})"}) {
    a = Raw(cloud, "PUT", "/x.json", body);
    EXPECT_EQ(a.status, 400) << body;
    EXPECT_EQ(a.body, InvalidKeyAt(1, 2)) << body;
  }
  // PATCH keys are paths: every segment a valid key, none an ancestor of another, an object only.
  EXPECT_EQ(Raw(cloud, "PATCH", "/x.json", R"({"a/b.c": 1})").body, InvalidKeyAt(1, 2));
  EXPECT_EQ(Raw(cloud, "PATCH", "/x.json", R"({"a/b": {"c$": 1}})").body, InvalidKeyAt(1, 10));
  a = Raw(cloud, "PATCH", "/x.json", R"({"a": 1, "a/b": 2})");
  EXPECT_EQ(a.status, 400);
  EXPECT_NE(a.body.find("ancestor"), std::string::npos) << a.body;
  EXPECT_EQ(Raw(cloud, "PATCH", "/x.json", "[1]").body,
            ErrorBody("Invalid data; couldn't parse JSON object. Are you sending a JSON object with valid key names?"));
  // Not JSON at all (NaN is not JSON; an empty write carries no value; not UTF-8).
  for (const char* body : {"{", R"({"a": NaN})", "", "  ", "\xff"}) {
    a = Raw(cloud, "PUT", "/x.json", body);
    EXPECT_EQ(a.status, 400) << body;
    EXPECT_EQ(a.body, kInvalidJson) << body;
  }
  EXPECT_TRUE(cloud.Control({{"op", "dump"}}).is_null()) << "nothing was written";
  EXPECT_TRUE(cloud.Control({{"op", "log"}}).empty()) << "refused writes are not in the log";
}

TEST(FakeCloudRules, SizeLimitsOfDepthPathLengthAndStrings) {
  FakeCloud cloud;
  std::string deep = "/";
  for (int i = 0; i < 31; ++i) deep += "d/";
  EXPECT_EQ(Raw(cloud, "PUT", deep + "x.json", "1").status, 200) << "32 levels";
  EXPECT_EQ(Raw(cloud, "PUT", deep + "x/y.json", "1").body, kInvalidPath) << "33 levels in the URL";
  Answer a = Raw(cloud, "PUT", deep + "x.json", R"({"y": 1})");
  EXPECT_EQ(a.status, 400) << "33 levels with the body";
  // 768 bytes of path, '/' before each segment counted.
  std::string key(700, 'k');
  EXPECT_EQ(Raw(cloud, "PUT", "/" + key + ".json", "1").status, 200);
  EXPECT_EQ(Raw(cloud, "PUT", "/" + key + "/" + std::string(67, 'z') + ".json", "1").status, 400);
  EXPECT_EQ(Raw(cloud, "PUT", "/" + key + ".json", "{\"" + std::string(66, 'z') + "\": 1}").status, 200);
  EXPECT_EQ(Raw(cloud, "PUT", "/" + key + ".json", "{\"" + std::string(67, 'z') + "\": 1}").status, 400);
  // A string of 10 MiB is the most a leaf may hold.
  std::string big = "\"" + std::string(10 << 20, 's') + "\"";
  EXPECT_EQ(Raw(cloud, "PUT", "/s.json", big).status, 200);
  big.insert(1, "s");
  EXPECT_EQ(Raw(cloud, "PUT", "/s.json", big).status, 400);
}

TEST(FakeCloudRules, WritesOverTheRestLimitAreRefusedUnread) {
  FakeCloud cloud;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(cloud.port()));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  std::string req = "PUT /big.json HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string((256 << 20) + 1) + "\r\n\r\n";  // no body byte: nothing is left unread when the server closes
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
}

TEST(FakeCloudRules, ServerValuesResolveOrAreRefused) {
  FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", 5000}});
  auto now = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  int64_t before = now();
  Answer a = Raw(cloud, "PUT", "/v.json", R"({"t": {".sv": "timestamp"}, "n": {".sv": {"increment": 2}}})");
  int64_t after = now();
  ASSERT_EQ(a.status, 200) << a.body;
  json v = json::parse(a.body);
  EXPECT_GE(v["t"].get<int64_t>(), before + 5000);
  EXPECT_LE(v["t"].get<int64_t>(), after + 5000);
  EXPECT_EQ(v["n"], 2);
  EXPECT_EQ(Raw(cloud, "PATCH", "/v.json", R"({"n": {".sv": {"increment": 3}}})").body, R"({"n":5})");
  for (const char* body : {R"({".sv": "now"})", R"({".sv": {"increment": "1"}})", R"({".sv": {"max": 1}})",
                           R"({".sv": "timestamp", "x": 1})"}) {
    EXPECT_EQ(Raw(cloud, "PUT", "/w.json", body).status, 400) << body;
  }
  // A server that echoes writes unresolved (npm firebase-server): the stored value is resolved.
  cloud.Control({{"op", "echo_sv"}, {"on", true}});
  EXPECT_EQ(Raw(cloud, "PUT", "/e.json", R"({"t":{".sv":"timestamp"}})").body, R"({"t":{".sv":"timestamp"}})");
  EXPECT_TRUE(cloud.Get("/e/t").is_number_integer());
}

TEST(FakeCloudRules, DateHeaderTellsTheSkewedServerClockUnlessSwitchedOff) {
  FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", 3 * 3600 * 1000}});
  Answer a = Raw(cloud, "GET", "/.json");
  ASSERT_TRUE(a.headers.count("date"));
  time_t date = curl_getdate(a.headers["date"].c_str(), nullptr);
  EXPECT_LT(std::llabs(static_cast<long long>(date - time(nullptr) - 3 * 3600)), 3) << a.headers["date"];
  cloud.Control({{"op", "no_date"}, {"on", true}});
  EXPECT_FALSE(Raw(cloud, "GET", "/.json").headers.count("date"));
}

TEST(FakeCloudRules, EtagRules) {
  FakeCloud cloud;
  ASSERT_EQ(Raw(cloud, "PUT", "/c.json", "1").status, 200);
  Answer got = Raw(cloud, "GET", "/c.json", "", {"X-Firebase-ETag: true"});
  ASSERT_TRUE(got.headers.count("etag"));
  Answer lost = Raw(cloud, "PUT", "/c.json", "3", {"if-match: not-the-etag"});
  EXPECT_EQ(lost.status, 412);
  EXPECT_EQ(lost.body, "1") << "the current value";
  EXPECT_EQ(lost.headers["etag"], got.headers["etag"]);
  EXPECT_EQ(Raw(cloud, "PUT", "/c.json", "2", {"if-match: " + got.headers["etag"]}).status, 200);
  EXPECT_EQ(Raw(cloud, "PATCH", "/.json", R"({"c":5})", {"if-match: " + got.headers["etag"]}).status, 400)
      << "if-match belongs to PUT and DELETE";
  EXPECT_EQ(Raw(cloud, "PUT", "/c.json", "5", {"X-Firebase-ETag: true"}).status, 400);
  EXPECT_EQ(cloud.Get("/c"), 2);
}

TEST(FakeCloudRules, QueryParametersAreValidatedAndIndexesRequired) {
  FakeCloud cloud;
  ASSERT_EQ(Raw(cloud, "PUT", "/q.json", R"({"a":{"n":2},"b":{"n":1}})").status, 200);
  auto get = [&](const std::string& query) { return Raw(cloud, "GET", "/q.json?" + query); };
  EXPECT_EQ(get("limitToFirst=1").body, ErrorBody("orderBy must be defined when other query parameters are defined"));
  EXPECT_EQ(get("orderBy=n").body, ErrorBody("orderBy must be a valid JSON encoded path"));
  EXPECT_EQ(get("orderBy=%22n%22").body,
            ErrorBody(R"(Index not defined, add ".indexOn": "n", for path "/q", to the rules)"));
  EXPECT_EQ(get("orderBy=%22%24value%22").body,
            ErrorBody(R"(Index not defined, add ".indexOn": ".value", for path "/q", to the rules)"));
  EXPECT_EQ(get("orderBy=%22%24key%22&limitToFirst=1").body, R"({"a":{"n":2}})") << "keys need no index";
  cloud.Control({{"op", "index"}, {"path", "/q"}, {"on", {"n"}}});
  EXPECT_EQ(get("orderBy=%22n%22&limitToFirst=1").body, R"({"b":{"n":1}})");
  EXPECT_EQ(get("orderBy=%22n%22&startAt=%7B%7D").body, ErrorBody("Constraint index field must be a JSON primitive"));
  for (const char* bad : {"orderBy=%22n%22&limitToFirst=0", "orderBy=%22n%22&limitToLast=x",
                          "orderBy=%22n%22&limitToFirst=1&limitToLast=1", "orderBy=%22n%22&equalTo=1&startAt=1",
                          "orderBy=%22%24key%22&startAt=1", "print=loud", "prnt=silent", "shallow=true&orderBy=%22n%22",
                          "auth_variable_override=%5B1%5D", "limitToFirst=1&limitToFirst=2"}) {
    Answer a = get(bad);
    EXPECT_EQ(a.status, 400) << bad;
    EXPECT_EQ(a.body.rfind("{\n  \"error\" : ", 0), 0u) << bad << ": " << a.body;
  }
  EXPECT_EQ(Raw(cloud, "PUT", "/q.json?orderBy=%22n%22", "1").status, 400) << "queries are reads";
  EXPECT_EQ(get("print=pretty&auth_variable_override=null").status, 200);
}

TEST(FakeCloudRules, UnauthorizedAnswersPermissionDenied) {
  FakeCloud cloud("--secret s3cret");
  Answer a = Raw(cloud, "GET", "/x.json");
  EXPECT_EQ(a.status, 401);
  EXPECT_EQ(a.body, ErrorBody("Permission denied"));
  EXPECT_EQ(Raw(cloud, "GET", "/x.json?auth=s3cret").status, 200);
}

TEST(FakeCloudRules, WithoutStreamingAStreamRequestGetsPlainJson) {
  FakeCloud cloud;
  ASSERT_EQ(Raw(cloud, "PUT", "/s.json", "7").status, 200);
  cloud.Control({{"op", "no_streaming"}, {"on", true}});
  Answer a = Raw(cloud, "GET", "/s.json", "", {"Accept: text/event-stream"});
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.headers["content-type"], "application/json");
  EXPECT_EQ(a.body, "7");
}

}  // namespace
}  // namespace tether::upstream
