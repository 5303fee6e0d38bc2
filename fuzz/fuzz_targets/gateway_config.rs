//! The gateway's configuration file — upstreams, tenants and their limits, prices
//! (`GatewayConfig::merge_toml`, what `infermon gateway --config` reads), its checks
//! (`validate`), and building the gateway from it. Must never panic; an accepted upstream URL
//! must give the request URIs the proxy builds from it (it `expect`s them to parse).
#![no_main]

use std::path::Path;

use infermon_gateway::{Gateway, GatewayConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = GatewayConfig::new(Vec::new()).merge_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let gateway = Gateway::new(config, &opentelemetry::global::meter("fuzz"));
    for upstream in gateway.upstreams().all() {
        for path in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
            "/metrics",
        ] {
            let uri = format!("{}{path}", upstream.base);
            assert!(
                http::Request::post(&uri).body(()).is_ok(),
                "accepted upstream URL gives an invalid request URI {uri:?}"
            );
        }
    }
});
