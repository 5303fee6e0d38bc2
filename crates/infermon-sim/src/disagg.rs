//! Disaggregated prefill/decode, after vLLM 0.33.0's NIXL connector in pull mode
//! (`vllm/distributed/kv_transfer/kv_connector/v1/nixl/pull_scheduler.py`, `request_finished`,
//! read from the released wheel): a router sends the request to a prefill worker with
//! `kv_transfer_params: {"do_remote_decode": true}` and `max_tokens: 1`; the prefill worker's
//! response carries the `kv_transfer_params` a decode worker needs (`do_remote_prefill: true`,
//! the prefill engine's id, host and port, its block ids, `remote_num_tokens`); the router sends
//! the original request with those to a decode worker, which pulls the KV cache and decodes
//! without computing the prompt.
//!
//! Every simulator can play both parts (vLLM's `kv_role: kv_both`). The pull takes
//! `remote_num_tokens` × the model's KV bytes per token at the configured link's nominal rate,
//! plus its latency, on the simulated clock; it is a `kv_transfer` span and the
//! `llm.kv_transfer.*` metrics.

use serde::Deserialize;

/// The `kv_transfer_params` of a request (the fields the simulator reads; others are ignored).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct KvTransferParams {
    /// Set by the router on the prefill request: keep the KV cache for a decode worker.
    #[serde(default)]
    pub do_remote_decode: bool,
    /// Set on the decode request: pull the prompt's KV cache from `remote_*`.
    #[serde(default)]
    pub do_remote_prefill: bool,
    pub remote_engine_id: Option<String>,
    pub remote_host: Option<String>,
    pub remote_port: Option<u16>,
    /// Prompt tokens computed on the prefill worker.
    pub remote_num_tokens: Option<u32>,
}

/// The link KV caches travel over between prefill and decode workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvTransport {
    /// Within a node: NVLink 4 (H100), 900 GB/s both directions, 450 GB/s each way.
    Nvlink,
    /// Between nodes: 400 Gb/s InfiniBand NDR / RoCE (50 GB/s), as NIXL uses with UCX.
    #[default]
    Rdma,
    /// Between nodes without RDMA: 25 Gb/s Ethernet (3.125 GB/s).
    Tcp,
}

impl KvTransport {
    pub const ALL: [KvTransport; 3] = [KvTransport::Nvlink, KvTransport::Rdma, KvTransport::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            KvTransport::Nvlink => "nvlink",
            KvTransport::Rdma => "rdma",
            KvTransport::Tcp => "tcp",
        }
    }

    /// Nominal one-way bandwidth, bytes per second (real transfers reach less).
    pub fn bytes_per_second(self) -> f64 {
        match self {
            KvTransport::Nvlink => 450e9,
            KvTransport::Rdma => 50e9,
            KvTransport::Tcp => 3.125e9,
        }
    }

    /// Fixed cost of one transfer (request, completion notification), seconds.
    pub fn latency_s(self) -> f64 {
        match self {
            KvTransport::Nvlink => 10e-6,
            KvTransport::Rdma => 30e-6,
            KvTransport::Tcp => 200e-6,
        }
    }

    /// Simulated seconds to move `bytes`.
    pub fn transfer_seconds(self, bytes: u64) -> f64 {
        self.latency_s() + bytes as f64 / self.bytes_per_second()
    }
}

impl std::str::FromStr for KvTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        KvTransport::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown KV transport `{s}`: use nvlink, rdma or tcp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_llama_8b_prompt_moves_in_milliseconds_over_rdma_and_ten_times_slower_over_tcp() {
        // Llama-3-8B: 32 layers × 8 KV heads × 128 × 2 (K, V) × 2 bytes = 128 KiB per token.
        let bytes = 1024 * 131_072;
        let rdma = KvTransport::Rdma.transfer_seconds(bytes);
        let tcp = KvTransport::Tcp.transfer_seconds(bytes);
        assert!((rdma - (30e-6 + 134_217_728.0 / 50e9)).abs() < 1e-12);
        assert!(rdma > 0.002 && rdma < 0.003, "{rdma}");
        assert!(tcp / rdma > 10.0);
        assert!(KvTransport::Nvlink.transfer_seconds(bytes) < rdma);
        assert_eq!("tcp".parse::<KvTransport>(), Ok(KvTransport::Tcp));
        assert!("ib"
            .parse::<KvTransport>()
            .unwrap_err()
            .contains("nvlink, rdma or tcp"));
    }

    #[test]
    fn params_read_what_vllm_sends_and_ignore_the_rest() {
        let p: KvTransferParams = serde_json::from_str(
            r#"{"do_remote_prefill": true, "do_remote_decode": false, "remote_block_ids": [[1, 2]],
                "remote_engine_id": "e1", "remote_host": "10.0.0.1", "remote_port": 5600,
                "remote_num_tokens": 512, "tp_size": 1, "transfer_mode": "pull"}"#,
        )
        .unwrap();
        assert!(p.do_remote_prefill && !p.do_remote_decode);
        assert_eq!(p.remote_num_tokens, Some(512));
    }
}
