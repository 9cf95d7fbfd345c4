//! Write a Phantom policy plugin in Rust:
//!
//! ```ignore
//! use phantom_plugin_sdk::{AdmissionRequest, Plugin, Verdict, export_plugin};
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Settings { labels: Vec<String> }
//!
//! struct RequireLabels;
//! impl Plugin for RequireLabels {
//!     type Settings = Settings;
//!     fn evaluate(request: &AdmissionRequest, settings: Settings) -> Verdict {
//!         Verdict::allow()
//!     }
//! }
//! export_plugin!(RequireLabels);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown`. The ABI (documented in
//! `docs/plugins.md`) is JSON in, JSON out; this crate hides it. A plugin imports nothing: it
//! cannot do I/O, read a clock or draw random numbers, so the same input always gets the same
//! answer.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use serde_json::{self, Value};

/// The ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// What the host hands a plugin: the admission request and the plugin's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    pub request: AdmissionRequest,
    #[serde(default)]
    pub settings: Value,
}

/// The admission request, as in CEL (`object`, `oldObject`, `namespaceObject`, `request`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    #[serde(default)]
    pub object: Value,
    #[serde(default)]
    pub old_object: Value,
    #[serde(default)]
    pub namespace_object: Value,
    #[serde(default)]
    pub request: Value,
}

impl AdmissionRequest {
    /// The pod's label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.object
            .get("metadata")?
            .get("labels")?
            .get(key)?
            .as_str()
    }

    /// The pod's name (or `generateName` for pods of controllers, whose name is not known yet).
    pub fn pod_name(&self) -> &str {
        let meta = &self.object["metadata"];
        meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or(meta["generateName"].as_str())
            .unwrap_or("<unnamed>")
    }

    /// Every container of the pod: init containers first, then regular ones.
    pub fn containers(&self) -> impl Iterator<Item = &Value> {
        let spec = &self.object["spec"];
        let list = |k: &str| {
            spec[k]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
        };
        list("initContainers").chain(list("containers"))
    }
}

/// A plugin's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Decision hints: `{"inject": false}` keeps the policy from injecting this pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hints: Option<Value>,
}

impl Verdict {
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            message: Some(message.into()),
            ..Self::default()
        }
    }

    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    pub fn with_hints(mut self, hints: Value) -> Self {
        self.hints = Some(hints);
        self
    }
}

/// A policy plugin.
pub trait Plugin {
    /// The plugin's settings (the policy's `settings`); missing settings deserialize as default.
    type Settings: DeserializeOwned + Default;

    fn evaluate(request: &AdmissionRequest, settings: Self::Settings) -> Verdict;
}

/// Runs `P` on the input JSON and returns the output JSON. Pure and testable on the host.
pub fn run<P: Plugin>(input: &[u8]) -> Vec<u8> {
    let verdict = match serde_json::from_slice::<Input>(input) {
        Err(e) => Verdict::deny(format!("the plugin could not read its input: {e}")),
        Ok(input) => {
            let settings = if input.settings.is_null() {
                Ok(P::Settings::default())
            } else {
                serde_json::from_value(input.settings)
            };
            match settings {
                Ok(settings) => P::evaluate(&input.request, settings),
                Err(e) => Verdict::deny(format!("the plugin's settings are invalid: {e}")),
            }
        }
    };
    serde_json::to_vec(&verdict).unwrap_or_else(|_| {
        br#"{"allowed":false,"message":"serialising the verdict failed"}"#.to_vec()
    })
}

/// `phantom_alloc`: a buffer of `len` bytes the host writes the input into. Never freed: every
/// evaluation runs in a fresh instance, whose memory is discarded afterwards.
#[doc(hidden)]
pub fn __alloc(len: i32) -> i32 {
    let mut buffer = Vec::<u8>::with_capacity(len.max(0) as usize);
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    ptr as usize as i32
}

/// `phantom_evaluate`: reads the input the host wrote at `ptr`, returns `out_ptr << 32 | out_len`.
#[doc(hidden)]
pub fn __evaluate<P: Plugin>(ptr: i32, len: i32) -> i64 {
    // SAFETY: the host wrote exactly `len` bytes into the buffer `__alloc(len)` returned at
    // `ptr`, and nothing else holds that buffer.
    #[allow(unsafe_code)]
    let input =
        unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len.max(0) as usize) };
    let output = run::<P>(input).into_boxed_slice();
    let (out_ptr, out_len) = (output.as_ptr() as usize as i64, output.len() as i64);
    std::mem::forget(output);
    (out_ptr << 32) | out_len
}

/// Exports the ABI's functions for a [`Plugin`] type.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[allow(unsafe_code)] // `no_mangle` is how a wasm export gets its name.
        #[unsafe(no_mangle)]
        pub extern "C" fn phantom_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn phantom_alloc(len: i32) -> i32 {
            $crate::__alloc(len)
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn phantom_evaluate(ptr: i32, len: i32) -> i64 {
            $crate::__evaluate::<$plugin>(ptr, len)
        }
    };
}
