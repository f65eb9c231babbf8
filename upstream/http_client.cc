#include "upstream/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <utility>

#include "util/uv_handle.h"

namespace tether::upstream {
namespace {

struct Transfer {
  HttpClient::RequestId id = 0;
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  HttpRequest req;
  HttpResponse resp;
  HttpClient::Done done;
  bool headers_reported = false;
};

// A socket curl asked us to watch, from CURL_POLL_IN/OUT until CURL_POLL_REMOVE.
struct SocketWatch {
  util::UvHandle<uv_poll_t> poll;
  curl_socket_t fd;
  HttpClient::Impl* owner;
};

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

struct HttpClient::Impl {
  uv_loop_t* loop;
  HttpClientOptions options;
  CURLM* multi;
  util::UvHandle<uv_timer_t> timer;
  RequestId next_id = 1;
  std::map<RequestId, std::unique_ptr<Transfer>> transfers;
  int curl_depth = 0;                 // > 0 while inside curl_multi_socket_action
  // libcurl refuses multi calls from its own callbacks (CURLM_RECURSIVE_API_CALL): requests
  // started or cancelled from on_data/on_headers wait here until the socket action returns.
  std::vector<RequestId> deferred_cancels, deferred_adds;

  void SocketAction(curl_socket_t fd, int flags) {
    int running = 0;
    ++curl_depth;
    curl_multi_socket_action(multi, fd, flags, &running);
    --curl_depth;
    for (RequestId id : std::exchange(deferred_cancels, {})) Remove(id);
    for (RequestId id : std::exchange(deferred_adds, {})) {
      if (auto it = transfers.find(id); it != transfers.end()) curl_multi_add_handle(multi, it->second->easy);
    }
    DrainMessages();
  }

  void DrainMessages() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      CURLcode code = msg->data.result;
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      t->resp.status = static_cast<int>(status);
      long version = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_HTTP_VERSION, &version);
      t->resp.http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : version == 0 ? 0 : 1;
      if (code != CURLE_OK) {
        t->resp.transport_error = true;
        t->resp.error = curl_easy_strerror(code);
      }
      auto node = transfers.extract(t->id);
      Done done = std::move(t->done);
      HttpResponse resp = std::move(t->resp);
      Release(t);
      if (done) done(std::move(resp));  // may start/cancel other requests
    }
  }

  void Release(Transfer* t) {
    curl_multi_remove_handle(multi, t->easy);
    curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->header_list);
  }

  void Remove(RequestId id) {
    auto it = transfers.find(id);
    if (it == transfers.end()) return;
    Release(it->second.get());
    transfers.erase(it);
  }

  static int OnSocket(CURL*, curl_socket_t fd, int what, void* userp, void* socketp) {
    auto* self = static_cast<Impl*>(userp);
    auto* w = static_cast<SocketWatch*>(socketp);
    if (what == CURL_POLL_REMOVE) {
      if (w) {
        curl_multi_assign(self->multi, fd, nullptr);
        delete w;  // its poll handle closes with it
      }
      return 0;
    }
    if (!w) {
      w = new SocketWatch{{}, fd, self};
      if (w->poll.Init(self->loop, w, uv_poll_init_socket, fd) != 0) {
        delete w;
        return -1;  // curl fails the transfer (the socket cannot be watched)
      }
      curl_multi_assign(self->multi, fd, w);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(w->poll, events, [](uv_poll_t* p, int status, int ev) {
      auto* sw = static_cast<SocketWatch*>(p->data);
      int flags = 0;
      if (status < 0) flags = CURL_CSELECT_ERR;
      if (ev & UV_READABLE) flags |= CURL_CSELECT_IN;
      if (ev & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
      sw->owner->SocketAction(sw->fd, flags);
    });
    return 0;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Impl*>(userp);
    if (timeout_ms < 0) {
      uv_timer_stop(self->timer);
    } else {
      uv_timer_start(self->timer, [](uv_timer_t* t) {
        static_cast<Impl*>(t->data)->SocketAction(CURL_SOCKET_TIMEOUT, 0);
      }, static_cast<uint64_t>(timeout_ms), 0);
    }
    return 0;
  }

  static size_t OnBody(char* ptr, size_t size, size_t n, void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (t->req.stream && status >= 200 && status < 300 && t->req.on_data) {
      t->req.on_data(std::string_view(ptr, len));
    } else {
      t->resp.body.append(ptr, len);
    }
    return len;
  }

  static size_t OnHeader(char* ptr, size_t size, size_t n, void* userp) {
    auto* t = static_cast<Transfer*>(userp);
    std::string_view line(ptr, size * n);
    if (line.starts_with("HTTP/")) {
      t->resp.headers.clear();  // a redirect or 100-continue: keep only the last response's
    } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
      std::string name(line.substr(0, colon));
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
        value.remove_suffix(1);
      t->resp.headers[name] = std::string(value);
    } else if (line == "\r\n" || line == "\n") {
      long status = 0;
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      bool redirect = t->req.follow_redirects && status >= 300 && status < 400;
      if (!redirect && status >= 200 && !t->headers_reported && t->req.on_headers) {
        t->headers_reported = true;
        t->req.on_headers(static_cast<int>(status), t->resp.headers);
      }
    }
    return size * n;
  }
};

HttpClient::HttpClient(uv_loop_t* loop, HttpClientOptions options) : impl_(std::make_unique<Impl>()) {
  GlobalInit();
  impl_->loop = loop;
  impl_->options = std::move(options);
  impl_->multi = curl_multi_init();
  impl_->timer = util::UvTimer(loop, impl_.get());
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETFUNCTION, &Impl::OnSocket);
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETDATA, impl_.get());
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERFUNCTION, &Impl::OnTimer);
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERDATA, impl_.get());
}

HttpClient::~HttpClient() {
  for (auto& [id, t] : impl_->transfers) impl_->Release(t.get());
  impl_->transfers.clear();
  curl_multi_cleanup(impl_->multi);  // the timer closes with impl_
}

HttpClient::RequestId HttpClient::Start(HttpRequest req, Done done) {
  auto t = std::make_unique<Transfer>();
  t->id = impl_->next_id++;
  t->req = std::move(req);
  t->done = std::move(done);
  CURL* e = t->easy = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_URL, t->req.url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  if (!impl_->options.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, impl_->options.ca_file.c_str());
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t->req.connect_timeout_ms);
  if (!t->req.stream) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->req.timeout_ms);
  if (!t->req.stream) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, t->req.follow_redirects ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  if (t->req.fresh_connection) curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Impl::OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  if (t->req.method == "GET") {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->req.method.c_str());
    if (t->req.method != "DELETE" || !t->req.body.empty()) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->req.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->req.body.size()));
    }
  }
  t->header_list = curl_slist_append(nullptr, "Expect:");  // no 100-continue round trip
  for (const auto& h : t->req.headers) t->header_list = curl_slist_append(t->header_list, h.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
  RequestId id = t->id;
  impl_->transfers.emplace(id, std::move(t));
  if (impl_->curl_depth > 0) impl_->deferred_adds.push_back(id);
  else curl_multi_add_handle(impl_->multi, e);  // the timer callback kicks it off
  return id;
}

void HttpClient::Cancel(RequestId id) {
  if (impl_->curl_depth > 0) {
    auto it = impl_->transfers.find(id);
    if (it == impl_->transfers.end()) return;
    it->second->done = nullptr;
    it->second->req.on_data = nullptr;
    impl_->deferred_cancels.push_back(id);
  } else {
    impl_->Remove(id);
  }
}

size_t HttpClient::in_flight() const { return impl_->transfers.size(); }

}  // namespace tether::upstream
