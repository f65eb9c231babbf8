// BufferedHttpServer: serves httplib routes over TCP so that slow, idle or half-open clients cannot
// hold the threads that answer /healthz and /metrics.
//
// Threads: one acceptor thread owns the listening socket and every connection until its request
// has fully arrived — the head and the body its Content-Length announces — reading them with
// epoll, no thread per connection. Only then does one of `workers` threads run the request through
// httplib (parsing, routing, the handler, the response). One request per connection (the reply
// says "Connection: close"), so a client can never park a worker between requests either.
//
// Limits (each refusal is counted, see Counters):
//  - a request must arrive within `request_timeout` of the connect (408, connection closed);
//  - at most `max_pending` connections wait for their request: a new one closes the oldest;
//  - head at most `max_head` bytes (431), body at most `max_body` (413), no chunked bodies (411);
//  - at most `max_queued` complete requests wait for a worker (503);
//  - writing a reply gives up after `write_timeout` (a client that does not read).
// Workers therefore wait only for handlers, never for clients. Start/Stop from one thread.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "util/mutex.h"

namespace tether {

// httplib::Server whose routing runs on a request someone else read (process_request is protected).
class HttpRoutes : public httplib::Server {
 public:
  // Parses, routes and answers the one request in `stream`; false when the client went away.
  bool Serve(httplib::Stream& stream);
};

class BufferedHttpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;  // 0: any free port (see port())
    int workers = 4;
    std::chrono::milliseconds request_timeout{2000};
    std::chrono::milliseconds write_timeout{2000};
    size_t max_pending = 256;
    size_t max_queued = 64;
    size_t max_head = 16 * 1024;
    size_t max_body = 64 * 1024;
  };
  // Connections closed before a worker saw their request, by reason.
  struct Counters {
    std::atomic<uint64_t> timed_out{0};   // request not complete within request_timeout
    std::atomic<uint64_t> evicted{0};     // closed to make room under max_pending
    std::atomic<uint64_t> too_large{0};   // head or body over its limit, or chunked
    std::atomic<uint64_t> overloaded{0};  // max_queued requests already waiting for a worker
  };

  // `routes` must outlive the server.
  BufferedHttpServer(Options options, HttpRoutes* routes);
  ~BufferedHttpServer();  // Stop()
  BufferedHttpServer(const BufferedHttpServer&) = delete;
  BufferedHttpServer& operator=(const BufferedHttpServer&) = delete;

  // Binds and starts the threads; false with *error (errno text) when the address cannot be bound.
  bool Start(std::string* error);
  // Closes the listener and every connection not yet answered, and joins the threads (a worker
  // finishes the request it runs first).
  void Stop();
  uint16_t port() const { return port_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Pending;
  struct Request {
    int fd;
    std::string bytes;  // the whole request
  };
  void AcceptLoop();
  void WorkerLoop();
  // Queues a complete request for the workers, or answers 503 when too many wait.
  void Dispatch(Request request);

  Options options_;
  HttpRoutes* routes_;
  Counters counters_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop() wakes the acceptor
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  util::Mutex mu_;
  util::CondVar ready_;  // signalled when queue_ grows or stopping_ is set
  std::deque<Request> queue_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
};

}  // namespace tether
