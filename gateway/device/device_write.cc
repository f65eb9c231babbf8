#include "gateway/device/device_write.h"

#include "gateway/model/data_rules.h"
#include "gateway/model/route_pattern.h"
#include "store/boot_clock.h"

namespace tether {

std::string TreePath(const std::vector<std::string>& cloud) {
  std::string path = "/";  // appended: GCC 12 at -O3 takes "/" + std::string&& for an overlapping memcpy
  path += JoinPath(cloud);
  return path;
}

void AddTreeWrite(store::WriteBatch* batch, store::OpKind kind, const std::string& tree_path, Json local,
                  int64_t cloud_now_ms, bool refuse_non_finite) {
  if (kind == store::OpKind::kRemove) return batch->TreeRemove(tree_path);
  std::vector<store::mutation::TreeIncrement> incs;
  if (HasServerValues(local)) {
    if (kind == store::OpKind::kUpdate && local.is_object()) {  // child paths in a canonical form
      Json canonical = Json::object();
      for (auto& [k, v] : local.items()) canonical[JoinPath(SplitPath(k))] = std::move(v);
      local = std::move(canonical);
    }
    for (auto& [rel, by] : ExtractIncrements(&local)) incs.push_back({rel, std::move(by), refuse_non_finite});
    ResolveTimestamps(&local, cloud_now_ms);
  }
  if (kind == store::OpKind::kUpdate) batch->TreeUpdate(tree_path, std::move(local), std::move(incs));
  else batch->TreeSet(tree_path, std::move(local), std::move(incs));
}

store::QueueEntry QueueEntryFor(const std::string& route, const std::string& device, store::OpKind kind,
                                const std::string& tree_path, const Json& value, int64_t wall_ms,
                                std::optional<int64_t> cloud_offset_ms) {
  store::QueueEntry e;
  e.route = route;
  e.device_id = device;
  e.kind = kind;
  e.path = tree_path;
  e.payload = kind == store::OpKind::kRemove ? "null" : EncodeJson(value);  // .sv kept: resolved at upload
  e.wall_ms = wall_ms;
  e.boottime_ms = store::BootTimeMs();
  e.boot_id = store::BootId();
  e.cloud_offset_ms = cloud_offset_ms;
  return e;
}

}  // namespace tether
