// Stores (TCPStore, FileStore) and the collectives, through the backend-neutral c10d::Backend
// interface. Needs only libtorch_cpu's headers.
#include <chrono>
#include <vector>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "internal.hpp"

extern "C" {

char* amp_c10d_tcp_store(const char* host, uint16_t port, int world, int is_server,
                         int64_t timeout_ms, AmpStore** out) {
  return amp_guard([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new AmpStore{store};
  });
}

char* amp_c10d_file_store(const char* path, int world, int64_t timeout_ms, AmpStore** out) {
  return amp_guard([&] {
    auto store = c10::make_intrusive<c10d::FileStore>(std::string(path), world);
    store->setTimeout(std::chrono::milliseconds(timeout_ms));
    *out = new AmpStore{store};
  });
}

char* amp_c10d_store_set(AmpStore* store, const char* key, const uint8_t* value, size_t len) {
  return amp_guard([&] {
    std::vector<uint8_t> v(value, value + len);
    store->store->set(std::string(key), v);
  });
}

char* amp_c10d_store_get(AmpStore* store, const char* key, uint8_t** value, size_t* len) {
  return amp_guard([&] {
    std::vector<uint8_t> v = store->store->get(std::string(key));
    auto* buf = static_cast<uint8_t*>(std::malloc(v.empty() ? 1 : v.size()));
    if (buf == nullptr) {
      throw std::bad_alloc();
    }
    if (!v.empty()) {
      std::memcpy(buf, v.data(), v.size());
    }
    *value = buf;
    *len = v.size();
  });
}

void amp_c10d_store_free(AmpStore* store) {
  delete store;
}

char* amp_c10d_all_reduce_sum(AmpGroup* group, void* tensor) {
  return amp_guard([&] {
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    group->backend->allreduce(ts, opts)->wait();
  });
}

char* amp_c10d_broadcast(AmpGroup* group, void* tensor, int root) {
  return amp_guard([&] {
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    group->backend->broadcast(ts, opts)->wait();
  });
}

char* amp_c10d_barrier(AmpGroup* group) {
  return amp_guard([&] { group->backend->barrier()->wait(); });
}

void amp_c10d_group_free(AmpGroup* group) {
  delete group;
}

void amp_c10d_string_free(char* s) {
  std::free(s);
}

void amp_c10d_bytes_free(uint8_t* b) {
  std::free(b);
}

}  // extern "C"
