// UvHandle<T>: owns one heap-allocated libuv handle (uv_timer_t, uv_poll_t, uv_udp_t, ...) and
// closes it when destroyed: the one place that writes uv_close for an owned handle.
//
// Threads: created, used and destroyed on the thread of the loop it was initialized on.
// Ownership: the memory is libuv's from uv_close until the close callback, which frees it, so the
//   handle may outlive its UvHandle by one loop iteration (the loop must run, or be closed, for
//   it to be freed). uv_close stops the handle first: no callback of it runs after Close().
//   handle->data is the caller's; Close() clears it.
// Failure: the init function's libuv error code is returned by Init (nothing is held then); a
//   handle whose init cannot fail (uv_timer_init) may use the constructor.
// Move-only. Converts to T* so it is passed to uv_* functions as the raw handle was.
#pragma once

#include <uv.h>

#include <utility>

namespace tether::util {

template <typename T>
class UvHandle {
 public:
  UvHandle() = default;
  // `init(loop, handle, args...)` must not fail (uv_timer_init, uv_prepare_init, uv_check_init).
  template <typename InitFn, typename... Args>
  UvHandle(uv_loop_t* loop, void* data, InitFn init, Args&&... args) {
    Init(loop, data, init, std::forward<Args>(args)...);
  }
  ~UvHandle() { Close(); }
  UvHandle(UvHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  UvHandle& operator=(UvHandle&& other) noexcept {
    if (this != &other) {
      Close();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  // Closes any handle held, then allocates and initializes a new one; 0 or libuv's error code.
  template <typename InitFn, typename... Args>
  int Init(uv_loop_t* loop, void* data, InitFn init, Args&&... args) {
    Close();
    T* h = new T;
    if (int rc = init(loop, h, std::forward<Args>(args)...); rc != 0) {
      delete h;  // libuv holds nothing of a handle whose init failed
      return rc;
    }
    h->data = data;
    handle_ = h;
    return 0;
  }

  // Idempotent. The memory is freed by the loop once libuv is done with it.
  void Close() {
    if (!handle_) return;
    T* h = std::exchange(handle_, nullptr);
    h->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); });
  }

  T* get() const { return handle_; }
  operator T*() const { return handle_; }  // NOLINT(google-explicit-constructor): used as the raw handle
  uv_handle_t* handle() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  explicit operator bool() const { return handle_ != nullptr; }

 private:
  T* handle_ = nullptr;
};

// A timer whose callbacks find `data` in handle->data.
inline UvHandle<uv_timer_t> UvTimer(uv_loop_t* loop, void* data) { return UvHandle<uv_timer_t>(loop, data, uv_timer_init); }

}  // namespace tether::util
