// C ABI over libtorch's c10d (stores and process groups) for the mdpo-dist crate.
//
// Every function that can fail returns NULL on success or a heap string with the error message
// (free it with amp_c10d_string_free); results come back through out-pointers. Tensors are
// `at::Tensor*`, the handle tch's torch-sys uses. No gloo or NCCL type crosses this boundary.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AmpStore AmpStore;
typedef struct AmpGroup AmpGroup;

char* amp_c10d_tcp_store(const char* host, uint16_t port, int world, int is_server,
                         int64_t timeout_ms, AmpStore** out);
char* amp_c10d_file_store(const char* path, int world, int64_t timeout_ms, AmpStore** out);
char* amp_c10d_store_set(AmpStore* store, const char* key, const uint8_t* value, size_t len);
// Waits (up to the store's timeout) for `key`; the value is written to a heap buffer that the
// caller frees with amp_c10d_bytes_free.
char* amp_c10d_store_get(AmpStore* store, const char* key, uint8_t** value, size_t* len);
void amp_c10d_store_free(AmpStore* store);

// Defined only in builds that include the backend (gloo_group.cpp, nccl_group.cpp).
// `hostname` may be NULL: c10d's default device (GLOO_SOCKET_IFNAME or the host's address).
char* amp_c10d_gloo_new(AmpStore* store, int rank, int world, int64_t timeout_ms,
                        const char* hostname, AmpGroup** out);
char* amp_c10d_nccl_new(AmpStore* store, int rank, int world, int64_t timeout_ms, AmpGroup** out);

// Collectives on one tensor each (the Rust side flattens a list into one bucket).
char* amp_c10d_all_reduce_sum(AmpGroup* group, void* tensor);
char* amp_c10d_broadcast(AmpGroup* group, void* tensor, int root);
char* amp_c10d_barrier(AmpGroup* group);
void amp_c10d_group_free(AmpGroup* group);

void amp_c10d_string_free(char* s);
void amp_c10d_bytes_free(uint8_t* b);

#ifdef __cplusplus
}
#endif
