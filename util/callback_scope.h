// CallbackScope, Subscription, Hook: the lifetime of callbacks handed to someone else.
//
// - CallbackScope: an object that hands `this`-capturing callbacks to asynchronous work (a store
//   commit, an HTTP request, a credential refresh) wraps them with Guard(fn). A guarded callback
//   that arrives after Close() or after the scope was destroyed does nothing, so the owner need
//   not outlive the work it started.
// - Hook<R(Args...)>: one slot an owner calls (a "changed", "queued" or "settled" hook). Set()
//   fills it and returns a Subscription; destroying that Subscription (or Reset()) empties it
//   again. Nobody has to remember to set a hook to null in a destructor.
// - Subscription: move-only handle of one registration; unregisters when destroyed or Reset().
//
// Thread: none of these is thread-safe; a scope, a hook and their callbacks and subscriptions
// belong to one thread (in tetherd: the loop thread).
// Ownership: either side may go first. A Subscription outliving its Hook, or a guarded callback
// outliving its scope, is inert (they hold weak references, never the owner).
// Failure: none; calling an empty Hook returns R{} (nothing for void).
//
// Invariants:
// - Guard(fn)(args) runs fn(args) iff the scope is neither closed nor destroyed at the call.
// - A Hook holds at most one registration; Set() replaces the previous one, whose Subscription
//   then no longer touches the hook (it cannot remove its successor).
// - A registration cancelled while it runs finishes that call; its callable is destroyed later,
//   never under its own feet.
#pragma once

#include <functional>
#include <memory>
#include <utility>

namespace tether::util {

class Subscription {
 public:
  Subscription() = default;
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  ~Subscription() { Reset(); }
  Subscription(Subscription&& other) noexcept : cancel_(std::exchange(other.cancel_, nullptr)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      Reset();
      cancel_ = std::exchange(other.cancel_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Unregisters now (idempotent).
  void Reset() {
    if (auto cancel = std::exchange(cancel_, nullptr)) cancel();
  }
  explicit operator bool() const { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

class CallbackScope {
 public:
  CallbackScope() = default;
  ~CallbackScope() = default;  // destroying the token is closing
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

  // Callbacks guarded so far and from now on do nothing.
  void Close() { open_.reset(); }
  bool closed() const { return open_ == nullptr; }

  // A callable that runs fn with its arguments while this scope is open, and otherwise does
  // nothing. fn must return void.
  template <typename Fn>
  auto Guard(Fn fn) const {
    return [open = std::weak_ptr<const char>(open_), fn = std::move(fn)](auto&&... args) mutable {
      if (!open.expired()) fn(std::forward<decltype(args)>(args)...);
    };
  }

 private:
  std::shared_ptr<const char> open_ = std::make_shared<const char>(0);
};

template <typename Signature>
class Hook;

template <typename R, typename... Args>
class Hook<R(Args...)> {
 public:
  using Function = std::function<R(Args...)>;

  Hook() = default;
  Hook(const Hook&) = delete;
  Hook& operator=(const Hook&) = delete;

  // Fills the slot with fn until the returned Subscription is destroyed or reset.
  [[nodiscard]] Subscription Set(Function fn) {
    slot_ = std::make_shared<Slot>(Slot{std::move(fn), true});
    return Subscription([weak = std::weak_ptr<Slot>(slot_)] {
      if (auto slot = weak.lock()) slot->active = false;
    });
  }
  explicit operator bool() const { return slot_ && slot_->active; }

  R operator()(Args... args) const {
    if (slot_ && !slot_->active) slot_.reset();  // cancelled: free it now, while nothing runs it
    if (!slot_) return R();
    std::shared_ptr<Slot> running = slot_;  // kept until the call returns, even if cancelled inside
    return running->fn(std::forward<Args>(args)...);
  }

 private:
  struct Slot {
    Function fn;
    bool active;
  };
  mutable std::shared_ptr<Slot> slot_;  // mutable: a cancelled slot is freed by the next call
};

}  // namespace tether::util
