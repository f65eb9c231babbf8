#include "gateway/admin/buffered_http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_map>

namespace tether {

bool HttpRoutes::Serve(httplib::Stream& stream) {
  bool closed = false;
  return process_request(stream, /*close_connection=*/true, closed, nullptr);
}

namespace {

using Clock = std::chrono::steady_clock;

// A request already read into memory, for httplib to parse; replies go to the socket with one
// deadline for the whole reply.
class BufferedStream final : public httplib::Stream {
 public:
  BufferedStream(int fd, std::string bytes, std::chrono::milliseconds write_timeout)
      : fd_(fd), bytes_(std::move(bytes)), write_deadline_(Clock::now() + write_timeout) {}

  bool is_readable() const override { return read_ < bytes_.size(); }
  bool is_writable() const override { return WaitWritable(); }
  ssize_t read(char* ptr, size_t size) override {
    size_t n = std::min(size, bytes_.size() - read_);  // 0 past the end: the client sent no more
    std::memcpy(ptr, bytes_.data() + read_, n);
    read_ += n;
    return static_cast<ssize_t>(n);
  }
  using httplib::Stream::write;
  ssize_t write(const char* ptr, size_t size) override {
    size_t sent = 0;
    while (sent < size) {
      ssize_t n = send(fd_, ptr + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!WaitWritable()) return -1;
      } else {
        return -1;
      }
    }
    return static_cast<ssize_t>(sent);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { Address(getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { Address(getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  bool WaitWritable() const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(write_deadline_ - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLOUT, 0};
    int n;
    do {
      n = poll(&p, 1, static_cast<int>(left));
    } while (n < 0 && errno == EINTR);
    return n > 0 && (p.revents & POLLOUT);
  }
  template <class Get>
  void Address(Get get, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {0};
    if (a.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&a);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
      port = ntohs(in->sin_port);
    } else if (a.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
      port = ntohs(in6->sin6_port);
    }
    ip = text;
  }

  int fd_;
  std::string bytes_;
  size_t read_ = 0;
  Clock::time_point write_deadline_;
};

// A short reply written by the acceptor itself, best effort (never waits), then the socket closes.
void Reject(int fd, int status, const char* reason, const std::string& message) {
  std::string body = "{\"error\": \"" + message + "\"}\n";
  std::string reply = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body;
  (void)send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  close(fd);
}

// Whether header line `line` is "<name>: value" (name case-insensitive); sets *value (trimmed).
bool HeaderIs(std::string_view line, std::string_view name, std::string_view* value) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  std::string_view v = line.substr(name.size() + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  *value = v;
  return true;
}

}  // namespace

// A connection whose request has not fully arrived.
struct BufferedHttpServer::Pending {
  uint64_t id = 0;          // tells a reused descriptor number from the connection it replaced
  std::string bytes;
  size_t head_end = 0;      // offset just past "\r\n\r\n"; 0 while the head is incomplete
  size_t body_bytes = 0;    // Content-Length
  bool expect_continue = false;  // the client waits for "100 Continue" before its body
  bool continued = false;        // "100 Continue" sent
};

BufferedHttpServer::BufferedHttpServer(Options options, HttpRoutes* routes)
    : options_(std::move(options)), routes_(routes) {}

BufferedHttpServer::~BufferedHttpServer() { Stop(); }

bool BufferedHttpServer::Start(std::string* error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(options_.host.c_str(), std::to_string(options_.port).c_str(), &hints, &res); rc != 0) {
    *error = gai_strerror(rc);
    return false;
  }
  int err = 0;
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int yes = 1;  // never SO_REUSEPORT: a second tetherd must not share the port
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
      err = errno;
      close(fd);
      continue;
    }
    listen_fd_ = fd;
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) {
    *error = std::strerror(err ? err : EADDRNOTAVAIL);
    return false;
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  {
    util::MutexLock lock(&mu_);  // before the threads start; the lock states the rule
    stopping_ = false;
  }
  acceptor_ = std::thread([this] { AcceptLoop(); });
  for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { WorkerLoop(); });
  return true;
}

void BufferedHttpServer::Stop() {
  if (!acceptor_.joinable()) return;
  {
    util::MutexLock lock(&mu_);
    stopping_ = true;
  }
  ready_.SignalAll();
  uint64_t one = 1;
  (void)::write(wake_fd_, &one, sizeof one);
  acceptor_.join();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  {
    util::MutexLock lock(&mu_);  // no thread is left to race; the lock states the rule
    for (Request& r : queue_) close(r.fd);
    queue_.clear();
  }
  close(wake_fd_);
  wake_fd_ = -1;
}

void BufferedHttpServer::AcceptLoop() {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = wake_fd_;
  epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd_, &ev);

  std::unordered_map<int, Pending> pending;
  std::deque<std::tuple<Clock::time_point, int, uint64_t>> by_age;  // deadline, fd, id; oldest first
  uint64_t next_id = 0;
  auto drop = [&](int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    pending.erase(fd);
  };
  auto live = [&](int fd, uint64_t id) {
    auto it = pending.find(fd);
    return it != pending.end() && it->second.id == id;
  };
  // Closes the connection that has waited longest for its request; false when none waits.
  auto evict_oldest = [&] {
    while (!by_age.empty()) {
      auto [deadline, old, id] = by_age.front();
      by_age.pop_front();
      if (!live(old, id)) continue;
      ++counters_.evicted;
      drop(old);
      Reject(old, 503, "Service Unavailable", "too many connections waiting to send a request");
      return true;
    }
    return false;
  };
  // Reads what `fd` has; hands a complete request to the workers, answers a bad one.
  auto on_readable = [&](int fd) {
    Pending& p = pending[fd];
    char buf[16384];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        p.bytes.append(buf, static_cast<size_t>(n));
        if (p.bytes.size() > options_.max_head + options_.max_body) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      drop(fd);  // closed or failed before its request was complete
      close(fd);
      return;
    }
    if (p.head_end == 0) {
      size_t end = p.bytes.find("\r\n\r\n");
      if (end == std::string::npos || end + 4 > options_.max_head) {
        if (p.bytes.size() <= options_.max_head) return;  // more to come
        ++counters_.too_large;
        drop(fd);
        return Reject(fd, 431, "Request Header Fields Too Large", "request head over the limit");
      }
      p.head_end = end + 4;
      std::string_view head(p.bytes.data(), end);
      for (size_t at = head.find("\r\n"); at != std::string_view::npos;) {
        size_t next = head.find("\r\n", at + 2);
        std::string_view line = head.substr(at + 2, next == std::string_view::npos ? std::string_view::npos
                                                                                   : next - at - 2);
        std::string_view value;
        if (HeaderIs(line, "transfer-encoding", &value)) {
          ++counters_.too_large;
          drop(fd);
          return Reject(fd, 411, "Length Required", "send the body with a Content-Length");
        }
        if (HeaderIs(line, "content-length", &value)) {
          size_t length = 0;
          auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
          if (ec != std::errc() || ptr != value.data() + value.size() || length > options_.max_body) {
            ++counters_.too_large;
            drop(fd);
            return Reject(fd, 413, "Payload Too Large", "request body over the limit");
          }
          p.body_bytes = length;
        }
        if (HeaderIs(line, "expect", &value)) p.expect_continue = true;
        at = next;
      }
    }
    if (p.bytes.size() < p.head_end + p.body_bytes) {
      if (p.expect_continue && !p.continued) {  // curl waits for it before a large body
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        (void)send(fd, kContinue, sizeof kContinue - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        p.continued = true;
      }
      return;
    }
    Request r{fd, p.bytes.substr(0, p.head_end + p.body_bytes)};
    drop(fd);
    Dispatch(std::move(r));
  };

  epoll_event events[64];
  for (;;) {
    while (!by_age.empty() && !live(std::get<1>(by_age.front()), std::get<2>(by_age.front()))) by_age.pop_front();
    int timeout = -1;
    if (!by_age.empty()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(std::get<0>(by_age.front()) - Clock::now());
      timeout = static_cast<int>(std::max<int64_t>(0, left.count() + 1));
    }
    int n = epoll_wait(ep, events, 64, timeout);
    if (n < 0 && errno != EINTR) break;
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        stop = true;
      } else if (fd == listen_fd_) {
        for (;;) {
          int c = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0 && (errno == EMFILE || errno == ENFILE)) {
            // Out of descriptors with connections still queued: the listener stays readable, so
            // free one (the oldest waiting) or pause, rather than spin.
            if (!evict_oldest()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          if (c < 0) break;
          if (pending.size() >= options_.max_pending) evict_oldest();  // one out, one in
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          pending[c].id = ++next_id;
          by_age.emplace_back(Clock::now() + options_.request_timeout, c, next_id);
        }
      } else if (pending.count(fd)) {
        on_readable(fd);
      }
    }
    if (stop) break;
    const auto now = Clock::now();
    while (!by_age.empty() && std::get<0>(by_age.front()) <= now) {
      auto [deadline, fd, id] = by_age.front();
      by_age.pop_front();
      if (!live(fd, id)) continue;
      ++counters_.timed_out;
      drop(fd);
      Reject(fd, 408, "Request Timeout", "the request did not arrive in time");
    }
  }
  for (auto& [fd, p] : pending) close(fd);
  close(ep);
  close(listen_fd_);
  listen_fd_ = -1;
}

void BufferedHttpServer::Dispatch(Request request) {
  {
    util::MutexLock lock(&mu_);
    if (queue_.size() < options_.max_queued) {
      queue_.push_back(std::move(request));
      ready_.Signal();
      return;
    }
  }
  ++counters_.overloaded;
  Reject(request.fd, 503, "Service Unavailable", "too many requests waiting; try again");
}

void BufferedHttpServer::WorkerLoop() {
  for (;;) {
    Request r;
    {
      util::MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) ready_.Wait(&mu_);
      if (stopping_) return;
      r = std::move(queue_.front());
      queue_.pop_front();
    }
    BufferedStream stream(r.fd, std::move(r.bytes), options_.write_timeout);
    routes_->Serve(stream);
    close(r.fd);
  }
}

}  // namespace tether
