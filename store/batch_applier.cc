#include "store/batch_applier.h"

#include <variant>

#include "store/store_error.h"

namespace tether::store {
namespace {

// Mutations that can need more pages than they free.
bool MayGrow(const WriteBatch& batch) {
  for (const mutation::Mutation& m : batch.mutations()) {
    if (std::holds_alternative<mutation::Append>(m) || std::holds_alternative<mutation::TreeUpdate>(m) ||
        std::holds_alternative<mutation::PutSession>(m) || std::holds_alternative<mutation::AddOnDisconnect>(m) ||
        std::holds_alternative<mutation::RetryDead>(m) || std::holds_alternative<mutation::MoveToDead>(m)) {
      return true;
    }
    if (auto* set = std::get_if<mutation::TreeSet>(&m); set && !set->value.is_null()) return true;
    if (std::holds_alternative<mutation::CloudWrite>(m) || std::holds_alternative<mutation::MarkComplete>(m)) {
      return true;
    }
  }
  return false;
}

}  // namespace

// One overload per mutation type: a type missing here does not compile.
struct BatchApplier::Dispatch {
  BatchApplier* self;
  MDB_txn* txn;
  BatchResult* result;
  AckBudget* acks;

  Status operator()(const mutation::Append& m) const { return self->queue_.Apply(txn, m, result); }
  Status operator()(const mutation::AckThrough& m) const { return self->queue_.Apply(txn, m, acks); }
  Status operator()(const mutation::AckSeqs& m) const { return self->queue_.Apply(txn, m, acks); }
  Status operator()(const mutation::MoveToDead& m) const { return self->queue_.Apply(txn, m); }
  Status operator()(const mutation::RetryDead& m) const { return self->queue_.Apply(txn, m, result); }
  Status operator()(const mutation::DropDead& m) const { return self->queue_.Apply(txn, m); }
  Status operator()(const mutation::SweepExpired& m) const { return self->queue_.Apply(txn, m); }
  Status operator()(const mutation::TreeSet& m) const { return self->tree_.Apply(txn, m, result); }
  Status operator()(const mutation::TreeUpdate& m) const { return self->tree_.Apply(txn, m, result); }
  Status operator()(const mutation::TreeRemove& m) const { return self->tree_.Apply(txn, m, result); }
  Status operator()(const mutation::CloudWrite& m) const { return self->tree_.Apply(txn, m, result); }
  Status operator()(const mutation::MarkComplete& m) const { return self->tree_.Apply(txn, m); }
  Status operator()(const mutation::ForgetComplete& m) const { return self->tree_.Apply(txn, m); }
  Status operator()(const mutation::PutSession& m) const { return self->sessions_.Apply(txn, m); }
  Status operator()(const mutation::TouchSession& m) const { return self->sessions_.Apply(txn, m); }
  Status operator()(const mutation::RemoveSession& m) const { return self->sessions_.Apply(txn, m); }
  Status operator()(const mutation::AddOnDisconnect& m) const { return self->sessions_.Apply(txn, m); }
  Status operator()(const mutation::CancelOnDisconnect& m) const { return self->sessions_.Apply(txn, m); }
};

BatchApplier::BatchApplier(const LmdbEnv& env, const StoreOptions& options, CacheUse* use)
    : ctx_(env, options), units_(&ctx_, use), queue_(&ctx_, &units_), tree_(&ctx_, &units_), sessions_(&ctx_) {}

void BatchApplier::Load(MDB_txn* txn, bool at_last_commit) {
  ctx_.counters = StoreCounters{};
  ctx_.counters_dirty = false;
  ctx_.touched = false;
  MDB_val k = Val("counters"), v;
  if (mdb_get(txn, ctx_.db.meta, &k, &v) || !DecodeCounters(View(v), &ctx_.counters)) {
    throw StoreError(ctx_.env.path() + ": corrupt store: unreadable counters record");
  }
  queue_.Load(txn);
  if (int rc = ctx_.pending.Load(txn, at_last_commit)) {
    throw StoreError(ctx_.env.path() + ": cannot read the queue for its path index: " + mdb_strerror(rc));
  }
  units_.Loaded();
}

Status BatchApplier::Flush(MDB_txn* txn) {
  if (Status s = queue_.Flush(txn); !s.ok()) return s;
  if (int rc = ctx_.pending.Persist(txn)) return ctx_.Mdb(rc, "pending index");
  if (Status s = units_.Flush(txn); !s.ok()) return s;
  if (ctx_.counters_dirty) {
    std::string v = EncodeCounters(ctx_.counters);
    MDB_val mk = Val("counters"), mv = Val(v);
    if (int rc = mdb_put(txn, ctx_.db.meta, &mk, &mv, 0)) return ctx_.Mdb(rc, "counters");
    ctx_.counters_dirty = false;
  }
  return Status::Ok();
}

Applied BatchApplier::Apply(MDB_txn* txn, const WriteBatch& batch, const ApplyMode& mode, BatchResult* result) {
  ctx_.touched = false;
  ctx_.exhausted = false;
  Applied applied;
  if (mode.space_low && MayGrow(batch)) {
    applied.status = Status::Error(StatusCode::kFull, "store is full (map at its maximum or disk full); retry later");
    return applied;
  }
  AckBudget acks{.left = mode.ack_budget};
  const Dispatch apply{this, txn, result, &acks};
  for (const mutation::Mutation& m : batch.mutations()) {
    applied.status = std::visit(apply, m);
    if (!applied.ok() || acks.cut_short) break;
  }
  if (applied.ok()) {
    result->tree_version = ctx_.counters.tree_version;
    if (mode.flush) applied.status = Flush(txn);
  }
  applied.touched = ctx_.touched;
  applied.exhausted = ctx_.exhausted;
  applied.cut_short = acks.cut_short;
  return applied;
}

Status BatchApplier::CountRejected(MDB_txn* txn) {
  return queue_.CountRejected() ? Flush(txn) : Status::Ok();
}

Status BatchApplier::EvictTree(MDB_txn* txn) {
  if (Status s = units_.Evict(txn); !s.ok()) return s;
  return Flush(txn);
}

}  // namespace tether::store
