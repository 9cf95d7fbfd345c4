//! The WebAssembly plugin host (wasmtime).
//!
//! ABI version 1 (documented for authors in `docs/plugins.md`; `phantom-plugin-sdk` implements
//! the guest side): the module exports `memory`, `phantom_abi_version() -> i32` (returns 1),
//! `phantom_alloc(len: i32) -> i32` and `phantom_evaluate(ptr: i32, len: i32) -> i64`. The host
//! allocates the input JSON (`{"request": ..., "settings": ...}`) in guest memory, calls
//! `phantom_evaluate`, and reads the output JSON at `result >> 32` with length
//! `result & 0xffff_ffff`. Modules import nothing: a plugin has no I/O, no clock, no randomness.
//!
//! Isolation: a module is compiled once per sha256 digest; every evaluation gets a fresh store
//! and instance (no state survives between requests), an epoch deadline (the engine's epoch
//! ticks every millisecond on a background thread) and a memory limit enforced by a
//! `ResourceLimiter`. Every failure mode is a [`PluginFailure`] and leaves the host healthy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

/// ABI version this host speaks.
pub const ABI_VERSION: i32 = 1;
/// Largest output a plugin may return.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Concurrent plugin instances one host supports.
const POOL_SLOTS: u32 = 128;
/// The largest memory limit a policy may set (`memoryLimitMiB` is at most 1024).
const MAX_PLUGIN_MEMORY_BYTES: usize = 1024 * 1024 * 1024;

/// Why a plugin evaluation failed. Messages never include the input (it may be large) and the
/// plugin's own output only as a short, sanitised excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFailure {
    #[error(
        "module digest is sha256:{actual}, the policy pins sha256:{expected}; update the policy's sha256 or the module"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error("not a valid WebAssembly module: {0}")]
    InvalidModule(String),
    #[error(
        "the module imports {0}; plugins may not import anything (no I/O, clock or randomness)"
    )]
    Imports(String),
    #[error("the module does not implement the plugin ABI: {0}")]
    Abi(String),
    #[error("exceeded its time limit of {0} ms and was stopped")]
    Timeout(u32),
    #[error("exceeded its memory limit of {0} MiB")]
    MemoryLimit(u32),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned output that is not the plugin ABI's JSON: {0}")]
    BadOutput(String),
}

/// Limits of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    pub timeout_ms: u32,
    pub memory_mib: u32,
}

/// A plugin's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginVerdict {
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Decision hints (for example `{"inject": false}` or a canary key); free-form, recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<serde_json::Value>,
}

/// A compiled, digest-verified module, pre-linked for fast instantiation.
#[derive(Clone)]
pub struct PluginModule {
    sha256: String,
    pre: InstancePre<Limiter>,
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule")
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl PluginModule {
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Hex sha256 of a module's bytes.
pub fn module_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The host: one engine, a module cache by digest, the epoch ticker.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    modules: Arc<Mutex<HashMap<String, InstancePre<Limiter>>>>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.modules.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("PluginHost")
            .field("cached_modules", &cached)
            .finish()
    }
}

/// Per-store memory accounting (public only because [`PluginModule`] is generic over it).
#[doc(hidden)]
#[derive(Debug)]
pub struct Limiter {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.denied |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl PluginHost {
    /// A new host with its epoch ticker thread.
    pub fn new() -> crate::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // A fresh instance per evaluation: the pooling allocator reuses pre-reserved slots instead
        // of mapping and unmapping linear memory every time (about 10x cheaper instantiation).
        // Its slot count also bounds concurrent evaluations; an exhausted pool refuses (fail closed).
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(MAX_PLUGIN_MEMORY_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| crate::Error::Host(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("phantom-wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| crate::Error::Host(format!("starting the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            modules: Arc::default(),
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// Verifies `bytes` against the pinned digest and compiles them (once per digest).
    pub fn load(&self, bytes: &[u8], expected_sha256: &str) -> Result<PluginModule, PluginFailure> {
        let actual = module_digest(bytes);
        if actual != expected_sha256 {
            return Err(PluginFailure::DigestMismatch {
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        if let Some(pre) = self.modules.lock().expect("module cache").get(&actual) {
            return Ok(PluginModule {
                sha256: actual,
                pre: pre.clone(),
            });
        }
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| PluginFailure::InvalidModule(e.to_string()))?;
        if let Some(import) = module.imports().next() {
            return Err(PluginFailure::Imports(format!(
                "{}::{}",
                import.module(),
                import.name()
            )));
        }
        for export in [
            "memory",
            "phantom_abi_version",
            "phantom_alloc",
            "phantom_evaluate",
        ] {
            if module.get_export(export).is_none() {
                return Err(PluginFailure::Abi(format!("missing export `{export}`")));
            }
        }
        let pre = Linker::new(&self.engine)
            .instantiate_pre(&module)
            .map_err(|e| PluginFailure::Abi(e.to_string()))?;
        self.modules
            .lock()
            .expect("module cache")
            .insert(actual.clone(), pre.clone());
        Ok(PluginModule {
            sha256: actual,
            pre,
        })
    }

    /// Evaluates `module` on `input` (the ABI's input JSON) in a fresh instance.
    pub fn evaluate(
        &self,
        module: &PluginModule,
        input: &[u8],
        limits: PluginLimits,
    ) -> Result<PluginVerdict, PluginFailure> {
        let max_bytes = (limits.memory_mib as usize).saturating_mul(1024 * 1024);
        let mut store = Store::new(
            &self.engine,
            Limiter {
                max_bytes,
                denied: false,
            },
        );
        store.limiter(|l| l);
        // Ticks are 1 ms; +1 so a deadline never fires before the requested time has passed.
        store.set_epoch_deadline(u64::from(limits.timeout_ms) + 1);
        store.epoch_deadline_trap();
        let fail = |store: &Store<Limiter>, e: wasmtime::Error| classify(store, e, limits);

        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| fail(&store, e))?;
        let abi = |e: wasmtime::Error| PluginFailure::Abi(e.to_string());
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "phantom_abi_version")
            .map_err(abi)?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "phantom_alloc")
            .map_err(abi)?;
        let evaluate = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "phantom_evaluate")
            .map_err(abi)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginFailure::Abi("`memory` is not a memory export".into()))?;

        let got = version.call(&mut store, ()).map_err(|e| fail(&store, e))?;
        if got != ABI_VERSION {
            return Err(PluginFailure::Abi(format!(
                "ABI version {got}, this host speaks {ABI_VERSION}"
            )));
        }
        let len = i32::try_from(input.len())
            .map_err(|_| PluginFailure::Abi("input larger than 2 GiB".into()))?;
        let ptr = alloc.call(&mut store, len).map_err(|e| fail(&store, e))?;
        memory
            .write(&mut store, ptr as u32 as usize, input)
            .map_err(|_| {
                PluginFailure::Abi(
                    "phantom_alloc returned memory outside the module's memory".into(),
                )
            })?;
        let packed = evaluate
            .call(&mut store, (ptr, len))
            .map_err(|e| fail(&store, e))? as u64;
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if out_len > MAX_OUTPUT_BYTES {
            return Err(PluginFailure::BadOutput(format!(
                "{out_len} bytes, more than {MAX_OUTPUT_BYTES}"
            )));
        }
        let mut out = vec![0u8; out_len];
        memory.read(&store, out_ptr, &mut out).map_err(|_| {
            PluginFailure::BadOutput("the output pointer is outside the module's memory".into())
        })?;
        serde_json::from_slice(&out).map_err(|e| {
            PluginFailure::BadOutput(format!("{e} (output starts with {:?})", excerpt(&out)))
        })
    }
}

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

fn classify(store: &Store<Limiter>, e: wasmtime::Error, limits: PluginLimits) -> PluginFailure {
    if store.data().denied {
        return PluginFailure::MemoryLimit(limits.memory_mib);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginFailure::Timeout(limits.timeout_ms),
        Some(trap) => PluginFailure::Trap(trap.to_string()),
        None => PluginFailure::Trap(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
