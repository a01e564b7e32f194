/**
 * Two scrapes of a mount one second apart, in prom-client's output format (HELP and TYPE lines,
 * histogram buckets, the constant `node` and `mountpoint` labels), for the unit tests of the
 * parser, the figures and `skyfs stats`.
 * @module
 */

const L = 'node="a",mountpoint="/mnt/a"';

/** One scrape; `k` scales every counter (1 = the first, 2 = the second). */
export function sampleMetrics(k: number, extra = ""): string {
  return `# HELP skyfs_fuse_requests_total FUSE requests answered, by opcode
# TYPE skyfs_fuse_requests_total counter
skyfs_fuse_requests_total{op="lookup",${L}} ${1000 * k}
skyfs_fuse_requests_total{op="write",${L}} ${400 * k}
skyfs_fuse_requests_total{op="read",${L}} ${100 * k}
# HELP skyfs_fuse_errors_total FUSE requests answered with an error, by opcode
# TYPE skyfs_fuse_errors_total counter
skyfs_fuse_errors_total{op="lookup",${L}} ${10 * k}
# HELP skyfs_fuse_request_duration_seconds FUSE request latency
# TYPE skyfs_fuse_request_duration_seconds histogram
skyfs_fuse_request_duration_seconds_bucket{le="0.0001",op="lookup",${L}} ${900 * k}
skyfs_fuse_request_duration_seconds_bucket{le="+Inf",op="lookup",${L}} ${1000 * k}
skyfs_fuse_request_duration_seconds_sum{op="lookup",${L}} ${0.05 * k}
skyfs_fuse_request_duration_seconds_count{op="lookup",${L}} ${1000 * k}
skyfs_fuse_request_duration_seconds_bucket{le="+Inf",op="write",${L}} ${400 * k}
skyfs_fuse_request_duration_seconds_sum{op="write",${L}} ${0.4 * k}
skyfs_fuse_request_duration_seconds_count{op="write",${L}} ${400 * k}
skyfs_fuse_request_duration_seconds_bucket{le="+Inf",op="read",${L}} ${100 * k}
skyfs_fuse_request_duration_seconds_sum{op="read",${L}} ${0.05 * k}
skyfs_fuse_request_duration_seconds_count{op="read",${L}} ${100 * k}
# TYPE skyfs_fuse_read_bytes_total counter
skyfs_fuse_read_bytes_total{${L}} ${1048576 * k}
# TYPE skyfs_fuse_write_bytes_total counter
skyfs_fuse_write_bytes_total{${L}} ${4 * 1048576 * k}
# TYPE skyfs_fuse_open_handles gauge
skyfs_fuse_open_handles{${L}} 3
# TYPE skyfs_meta_transactions_total counter
skyfs_meta_transactions_total{${L}} ${200 * k}
# TYPE skyfs_meta_transaction_duration_seconds histogram
skyfs_meta_transaction_duration_seconds_bucket{le="+Inf",${L}} ${200 * k}
skyfs_meta_transaction_duration_seconds_sum{${L}} ${0.4 * k}
skyfs_meta_transaction_duration_seconds_count{${L}} ${200 * k}
# TYPE skyfs_curp_commits_total counter
skyfs_curp_commits_total{path="fast",${L}} ${90 * k}
skyfs_curp_commits_total{path="slow",${L}} ${10 * k}
# TYPE skyfs_curp_commit_duration_seconds histogram
skyfs_curp_commit_duration_seconds_sum{path="fast",${L}} ${0.09 * k}
skyfs_curp_commit_duration_seconds_sum{path="slow",${L}} ${0.03 * k}
# TYPE skyfs_cache_hits_total counter
skyfs_cache_hits_total{tier="local",${L}} ${75 * k}
skyfs_cache_hits_total{tier="peer",${L}} ${20 * k}
skyfs_cache_hits_total{tier="backend",${L}} ${5 * k}
# TYPE skyfs_cache_misses_total counter
skyfs_cache_misses_total{tier="local",${L}} ${25 * k}
skyfs_cache_misses_total{tier="peer",${L}} ${5 * k}
skyfs_cache_misses_total{tier="backend",${L}} 0
# TYPE skyfs_cache_read_bytes_total counter
skyfs_cache_read_bytes_total{tier="local",${L}} ${3 * 1048576 * k}
skyfs_cache_read_bytes_total{tier="peer",${L}} ${1048576 * k}
skyfs_cache_read_bytes_total{tier="backend",${L}} 0
# TYPE skyfs_cache_used_bytes gauge
skyfs_cache_used_bytes{${L}} 1073741824
# TYPE skyfs_cache_capacity_bytes gauge
skyfs_cache_capacity_bytes{${L}} 8589934592
# TYPE skyfs_backend_requests_total counter
skyfs_backend_requests_total{op="get",${L}} ${8 * k}
skyfs_backend_requests_total{op="put",${L}} ${2 * k}
# TYPE skyfs_backend_request_duration_seconds histogram
skyfs_backend_request_duration_seconds_sum{op="get",${L}} ${0.08 * k}
skyfs_backend_request_duration_seconds_sum{op="put",${L}} ${0.02 * k}
# TYPE skyfs_uring_submissions_total counter
skyfs_uring_submissions_total{${L}} ${5000 * k}
# TYPE skyfs_uring_completions_total counter
skyfs_uring_completions_total{${L}} ${4990 * k}
# TYPE skyfs_uring_enter_calls_total counter
skyfs_uring_enter_calls_total{${L}} ${700 * k}
# TYPE skyfs_uring_inflight gauge
skyfs_uring_inflight{${L}} 10
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes{${L}} 157286400
# TYPE skyfs_heap_used_bytes gauge
skyfs_heap_used_bytes{${L}} 52428800
# TYPE skyfs_event_loop_delay_seconds gauge
skyfs_event_loop_delay_seconds{${L}} 0.0021
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total{${L}} ${0.35 * k}
${extra}`;
}
