// The embedded store: sharded hash maps under short locks, mirroring the Redis scripts'
// semantics (expiry included) so either store gives the same answers.
#include "filters/memory_store.hpp"

#include <algorithm>
#include <functional>

#include "filters/metrics.hpp"

namespace mxgate::filters {

namespace {

// A reputation record is forgotten once twenty half-lives have made it negligible
// (2^-20 of its weight); the Redis script sets the same expiry.
constexpr std::int64_t kReputationLifetimeHalfLives = 20;

}  // namespace

MemoryStore::MemoryStore(std::size_t max_entries, std::size_t shards)
    : shard_capacity_(std::max<std::size_t>(1, max_entries / std::max<std::size_t>(1, shards))),
      calls_(metrics::Registry::global().counter("mxgate_store_calls_total", "State store calls",
                                                 {{"backend", "memory"}})),
      evictions_(metrics::Registry::global().counter(
          "mxgate_store_evictions_total", "Embedded store entries evicted because it was full")) {
  shards = std::max<std::size_t>(1, shards);
  shards_.reserve(shards);
  for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

MemoryStore::Shard& MemoryStore::shard_for(const std::string& key) {
  return *shards_[std::hash<std::string>{}(key) % shards_.size()];
}

StoreTime MemoryStore::wall_now() const { return store_now(); }

void MemoryStore::count_call(const char*) const { calls_.inc(); }

MemoryStore::Entry* MemoryStore::find_live(Shard& shard, const std::string& key, StoreTime now) {
  auto found = shard.entries.find(key);
  if (found == shard.entries.end()) return nullptr;
  if (found->second.expires != 0 && found->second.expires <= now) {
    shard.entries.erase(found);
    return nullptr;
  }
  return &found->second;
}

MemoryStore::Entry& MemoryStore::insert(Shard& shard, const std::string& key, StoreTime now) {
  if (shard.entries.size() >= shard.sweep_at) {
    std::erase_if(shard.entries, [now](const auto& item) {
      return item.second.expires != 0 && item.second.expires <= now;
    });
    // Sweep again only after the map has doubled: amortised O(1) per insert.
    shard.sweep_at = std::max<std::size_t>(1024, shard.entries.size() * 2);
  }
  if (shard.entries.size() >= shard_capacity_ && !shard.entries.contains(key)) {
    // Full of live entries: forget an arbitrary one rather than grow without bound.
    shard.entries.erase(shard.entries.begin());
    evictions_.inc();
  }
  Entry& entry = shard.entries[key];
  return entry;
}

RateResult MemoryStore::rate_limit_now(const std::string& key, RateSpec spec, std::int64_t cost,
                                       RateMode mode, StoreTime now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  Entry* entry = find_live(shard, key, now);
  std::optional<std::int64_t> tat;
  if (entry) tat = entry->number;
  const GcraStep step = gcra_step(tat, gcra_parameters(spec), cost, mode, now);
  if (step.store && step.ttl > 0) {
    Entry& stored = entry ? *entry : insert(shard, key, now);
    stored.number = step.new_tat;
    stored.expires = now + step.ttl;
  }
  return step.result;
}

SlotResult MemoryStore::acquire_slot_now(const std::string& key, const std::string& slot,
                                         std::int64_t limit, std::chrono::seconds ttl,
                                         StoreTime now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  Entry* entry = find_live(shard, key, now);
  if (entry) std::erase_if(entry->slots, [now](const auto& item) { return item.second <= now; });
  const StoreTime expiry = now + ttl.count() * kMicrosPerSecond;
  if (entry && entry->slots.contains(slot)) {
    entry->slots[slot] = expiry;
    entry->expires = expiry;
    return {true, static_cast<std::int64_t>(entry->slots.size())};
  }
  const auto in_use = entry ? static_cast<std::int64_t>(entry->slots.size()) : 0;
  if (in_use >= limit) return {false, in_use};
  Entry& stored = entry ? *entry : insert(shard, key, now);
  stored.slots[slot] = expiry;
  stored.expires = expiry;
  return {true, in_use + 1};
}

bool MemoryStore::release_slot_now(const std::string& key, const std::string& slot) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto found = shard.entries.find(key);
  if (found == shard.entries.end()) return false;
  const bool removed = found->second.slots.erase(slot) > 0;
  if (found->second.slots.empty()) shard.entries.erase(found);
  return removed;
}

Reputation MemoryStore::reputation_update_now(const std::string& key, double good, double bad,
                                              std::chrono::seconds half_life, StoreTime now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  Entry* entry = find_live(shard, key, now);
  Entry& stored = entry ? *entry : insert(shard, key, now);
  Reputation reputation = decay(stored.reputation, half_life, now);
  reputation.good += good;
  reputation.bad += bad;
  reputation.updated = now;
  stored.reputation = reputation;
  stored.expires = now + kReputationLifetimeHalfLives * half_life.count() * kMicrosPerSecond;
  return reputation;
}

Reputation MemoryStore::reputation_get_now(const std::string& key, std::chrono::seconds half_life,
                                           StoreTime now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  Entry* entry = find_live(shard, key, now);
  if (!entry) return {};
  return decay(entry->reputation, half_life, now);
}

GreylistResult MemoryStore::greylist_now(const std::string& triplet_key, const std::string& net_key,
                                         const GreylistSpec& spec, StoreTime now) {
  // Redis runs this as one script; here each key is touched under its own shard's lock,
  // one lock at a time. The only race (two triplets of one net passing at once) can at
  // worst allowlist a net one retry early.
  const std::string retries_key = store_subkey(net_key, "retries");
  const auto seconds = [](std::chrono::seconds value) { return value.count() * kMicrosPerSecond; };
  {
    Shard& net_shard = shard_for(net_key);
    std::lock_guard lock(net_shard.mutex);
    if (spec.auto_allowlist > 0 && find_live(net_shard, net_key, now)) {
      return {GreylistResult::State::allowlisted, {}};
    }
  }
  bool newly_passed = false;
  GreylistResult result;
  {
    Shard& shard = shard_for(triplet_key);
    std::lock_guard lock(shard.mutex);
    Entry* entry = find_live(shard, triplet_key, now);
    if (!entry) {
      Entry& stored = insert(shard, triplet_key, now);
      stored.number = now;
      stored.text.clear();
      stored.expires = now + seconds(spec.retry_window);
      return {GreylistResult::State::defer, spec.delay};
    }
    if (entry->text == "passed") {
      entry->expires = now + seconds(spec.lifetime);
      return {GreylistResult::State::known, {}};
    }
    const std::int64_t waited = now - entry->number;
    if (waited < seconds(spec.delay)) {
      const std::int64_t left = seconds(spec.delay) - waited;
      return {GreylistResult::State::defer,
              std::chrono::seconds((left + kMicrosPerSecond - 1) / kMicrosPerSecond)};
    }
    entry->text = "passed";
    entry->expires = now + seconds(spec.lifetime);
    newly_passed = true;
    result = {GreylistResult::State::retried, {}};
  }
  if (newly_passed && spec.auto_allowlist > 0) {
    // One lock at a time: nested shard locks could deadlock against another net's call.
    bool allowlist = false;
    {
      Shard& counter_shard = shard_for(retries_key);
      std::lock_guard lock(counter_shard.mutex);
      Entry* counter = find_live(counter_shard, retries_key, now);
      Entry& stored = counter ? *counter : insert(counter_shard, retries_key, now);
      stored.number += 1;
      stored.expires = now + seconds(spec.lifetime);
      allowlist = stored.number >= spec.auto_allowlist;
    }
    if (allowlist) {
      Shard& allow_shard = shard_for(net_key);
      std::lock_guard lock(allow_shard.mutex);
      Entry& allow = insert(allow_shard, net_key, now);
      allow.number = 1;
      allow.expires = now + seconds(spec.lifetime);
    }
  }
  return result;
}

std::size_t MemoryStore::size() const {
  std::size_t total = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    total += shard->entries.size();
  }
  return total;
}

boost::asio::awaitable<StoreResult<RateResult>> MemoryStore::rate_limit(
    const std::string& key, RateSpec spec, std::int64_t cost, RateMode mode, StoreTime now) {
  count_call("rate_limit");
  co_return StoreResult<RateResult>::success(rate_limit_now(key, spec, cost, mode, now));
}

boost::asio::awaitable<StoreResult<SlotResult>> MemoryStore::acquire_slot(const std::string& key,
                                                                          const std::string& slot,
                                                                          std::int64_t limit,
                                                                          std::chrono::seconds ttl,
                                                                          StoreTime now) {
  count_call("acquire_slot");
  co_return StoreResult<SlotResult>::success(acquire_slot_now(key, slot, limit, ttl, now));
}

boost::asio::awaitable<StoreResult<bool>> MemoryStore::release_slot(const std::string& key,
                                                                    const std::string& slot) {
  count_call("release_slot");
  co_return StoreResult<bool>::success(release_slot_now(key, slot));
}

boost::asio::awaitable<StoreResult<std::vector<Reputation>>> MemoryStore::reputation_update(
    const std::vector<std::string>& keys, double good, double bad, std::chrono::seconds half_life,
    StoreTime now) {
  count_call("reputation_update");
  std::vector<Reputation> records;
  records.reserve(keys.size());
  for (const auto& key : keys) {
    records.push_back(reputation_update_now(key, good, bad, half_life, now));
  }
  co_return StoreResult<std::vector<Reputation>>::success(std::move(records));
}

boost::asio::awaitable<StoreResult<std::vector<Reputation>>> MemoryStore::reputation_get(
    const std::vector<std::string>& keys, std::chrono::seconds half_life, StoreTime now) {
  count_call("reputation_get");
  std::vector<Reputation> records;
  records.reserve(keys.size());
  for (const auto& key : keys) records.push_back(reputation_get_now(key, half_life, now));
  co_return StoreResult<std::vector<Reputation>>::success(std::move(records));
}

boost::asio::awaitable<StoreResult<GreylistResult>> MemoryStore::greylist(
    const std::string& triplet_key, const std::string& net_key, GreylistSpec spec, StoreTime now) {
  count_call("greylist");
  co_return StoreResult<GreylistResult>::success(greylist_now(triplet_key, net_key, spec, now));
}

boost::asio::awaitable<StoreResult<std::optional<std::string>>> MemoryStore::get(
    const std::string& key) {
  count_call("get");
  Shard& shard = shard_for(key);
  std::optional<std::string> value;
  {
    std::lock_guard lock(shard.mutex);
    if (Entry* entry = find_live(shard, key, wall_now())) value = entry->text;
  }
  co_return StoreResult<std::optional<std::string>>::success(std::move(value));
}

boost::asio::awaitable<StoreResult<bool>> MemoryStore::set(const std::string& key,
                                                           std::string value,
                                                           std::chrono::milliseconds ttl) {
  count_call("set");
  Shard& shard = shard_for(key);
  {
    const StoreTime now = wall_now();
    std::lock_guard lock(shard.mutex);
    Entry& entry = insert(shard, key, now);
    entry = Entry{};
    entry.text = std::move(value);
    entry.expires = ttl.count() > 0 ? now + ttl.count() * 1000 : 0;
  }
  co_return StoreResult<bool>::success(true);
}

boost::asio::awaitable<StoreResult<bool>> MemoryStore::remove(const std::string& key) {
  count_call("remove");
  Shard& shard = shard_for(key);
  bool removed = false;
  {
    std::lock_guard lock(shard.mutex);
    removed = find_live(shard, key, wall_now()) != nullptr && shard.entries.erase(key) > 0;
  }
  co_return StoreResult<bool>::success(removed);
}

}  // namespace mxgate::filters
