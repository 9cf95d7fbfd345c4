//! `phantom-guard`, the node's memory-access guard: loads the kernel side, keeps its protected set
//! equal to the pods this node runs that a monitoring policy protects, and turns detections into
//! Warning Events on the victim pod, `phantom_guard_*` metrics and `phantom_guard::detection` log
//! lines.
//!
//! Which pods: [`phantom_policies::MonitoringSet`] over the PhantomPolicies and namespaces (from
//! the API server, never from the pod's own annotations: nothing a pod's author writes can switch
//! its protection off). Their processes: every process whose cgroup is the pod's (or one of its
//! containers'), found by a `/proc` scan each resync; the pod's cgroup directory is registered
//! with the kernel side as soon as it exists, so a container started after that is covered at its
//! exec, before it runs.

pub mod args;
pub mod heartbeat;
pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use phantom_crds::PhantomPolicy;
use phantom_policies::MonitoringSet;
use tokio::sync::Notify;

use self::args::Settings;
use self::metrics::{DetectionLabels, Metrics, ModeLabel, ModeLabels};
use super::abi::{CgroupMode, Detection, Event, Protection, action_for, detections_for};
use super::kernel::{CheckPath, Events, Guard, Mode, Options};
use super::report::{self, Actor, Admit, RateLimiter, RepeatKey, Taken};
use super::{procfs, resume};
use crate::{Error, Result};
use phantom_identity::cgroup::PodCgroups;

/// A protected pod, as the loop and the reporter know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One pod to protect this round.
#[derive(Debug, Clone)]
struct Target {
    victim: Victim,
    protection: Protection,
    cgroups: PodCgroups,
}

/// What the loop remembers between rounds.
#[derive(Debug, Default)]
struct State {
    cookies: HashMap<String, u64>,
    next_cookie: u64,
    /// Registered cgroup ids per pod UID, with the protection they were registered with.
    cgroups: HashMap<String, (Protection, HashSet<u64>)>,
}

impl State {
    fn cookie(&mut self, uid: &str) -> u64 {
        if let Some(cookie) = self.cookies.get(uid) {
            return *cookie;
        }
        self.next_cookie += 1;
        self.cookies.insert(uid.to_owned(), self.next_cookie);
        self.next_cookie
    }
}

/// The shared view of who is protected (cookie → pod), read by the reporter.
type Victims = Arc<Mutex<HashMap<u64, Victim>>>;

fn namespace_json(namespaces: &Store<Namespace>, name: &str) -> serde_json::Value {
    namespaces
        .state()
        .into_iter()
        .find(|n| n.name_any() == name)
        .and_then(|n| serde_json::to_value(&*n).ok())
        .unwrap_or_else(|| serde_json::json!({"metadata": {"name": name}}))
}

/// The pods to protect this round (pods that finished are left alone).
fn targets(
    set: &MonitoringSet,
    pods: &Store<Pod>,
    namespaces: &Store<Namespace>,
    state: &mut State,
) -> Vec<Target> {
    let mut out = Vec::new();
    for pod in pods.state() {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Ok(json) = serde_json::to_value(&*pod) else {
            continue;
        };
        let namespace = pod.namespace().unwrap_or_default();
        let found = set.scope(&json, &namespace_json(namespaces, &namespace));
        if !found.is_protected() {
            continue;
        }
        let (Some(cgroups), Some(uid)) = (PodCgroups::from_pod(&pod), pod.uid()) else {
            continue;
        };
        out.push(Target {
            protection: Protection {
                detections: detections_for(found.scope.detections.iter().copied()),
                action: action_for(found.scope.action),
                cookie: state.cookie(&uid),
            },
            victim: Victim {
                namespace,
                name: pod.name_any(),
                uid,
            },
            cgroups,
        });
    }
    out
}

/// The hierarchy whose directories the kernel side compares.
fn hierarchy(cgroup_root: &Path, mode: CgroupMode) -> Option<PathBuf> {
    match mode {
        CgroupMode::V1Memory => Some(cgroup_root.join("memory")),
        CgroupMode::V2 => Some(cgroup_root.to_owned()),
        CgroupMode::None => None,
    }
}

/// A directory of the cgroup hierarchy.
#[derive(Debug)]
struct CgroupDir {
    path: PathBuf,
    /// Relative to the hierarchy's root, with a leading `/` (as `/proc/<pid>/cgroup` writes it).
    relative: String,
    /// 1 for the root's children.
    depth: usize,
}

/// Every directory of the hierarchy under `root`, breadth first, five levels deep: walked once per
/// resync for both the pods' own directories and the accessor index.
fn cgroup_dirs(root: &Path) -> Vec<CgroupDir> {
    let mut out = Vec::new();
    let mut level = vec![root.to_owned()];
    for depth in 1..=5 {
        let mut next = Vec::new();
        for dir in level {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                let relative = format!("/{}", path.strip_prefix(root).unwrap_or(&path).display());
                next.push(path.clone());
                out.push(CgroupDir {
                    path,
                    relative,
                    depth,
                });
            }
        }
        level = next;
    }
    out
}

/// The pod's own cgroup directory, if the kubelet made one (four levels deep at most).
fn find_pod_dir<'d>(dirs: &'d [CgroupDir], pod: &PodCgroups) -> Option<&'d Path> {
    dirs.iter()
        .filter(|d| d.depth <= 4)
        .find(|d| {
            d.path
                .file_name()
                .is_some_and(|name| pod.pod_segment(&name.to_string_lossy()).is_some())
        })
        .map(|d| d.path.as_path())
}

/// Every cgroup directory of a pod on this node (the pod's and its containers'), by kernfs id:
/// how an accessor is named after it exited (events carry its cgroup id).
type ActorIndex = Arc<Mutex<HashMap<u64, (String, String)>>>;

fn index_pods(dirs: &[CgroupDir], pods: &[(String, PodCgroups)]) -> HashMap<u64, (String, String)> {
    let mut out = HashMap::new();
    for dir in dirs {
        if let Some((pod, cgroups)) = pods.iter().find(|(_, c)| c.owns(&dir.relative))
            && let Ok(id) = procfs::cgroup_id(&dir.path)
        {
            let container = cgroups.container(&dir.relative).unwrap_or("?").to_owned();
            out.insert(id, (pod.clone(), container));
        }
    }
    out
}

/// Registers cgroup `dir` of pod `uid` with the kernel side (again if the protection changed).
fn register(guard: &mut Guard, state: &mut State, uid: &str, protection: Protection, dir: &Path) {
    let Ok(id) = procfs::cgroup_id(dir) else {
        return;
    };
    let entry = state
        .cgroups
        .entry(uid.to_owned())
        .or_insert_with(|| (protection, HashSet::new()));
    if entry.0 != protection || !entry.1.contains(&id) {
        match guard.protect_cgroup(id, protection) {
            Ok(()) => {
                entry.0 = protection;
                entry.1.insert(id);
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "registering a cgroup failed")
            }
        }
    }
}

/// One resync: register cgroups, cover existing processes, drop pods no longer protected.
fn resync(
    guard: &mut Guard,
    state: &mut State,
    targets: &[Target],
    settings: &Settings,
    mode: CgroupMode,
    dirs: &[CgroupDir],
) -> usize {
    let root = hierarchy(&settings.cgroup_root, mode);
    for target in targets {
        if let Some(dir) = find_pod_dir(dirs, &target.cgroups) {
            register(guard, state, &target.victim.uid, target.protection, dir);
        }
    }
    // Existing processes: every process whose cgroup is a target's.
    let mut covered = 0;
    let pids: Vec<u32> = std::fs::read_dir(&settings.proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for pid in pids {
        let Ok(text) = procfs::process_cgroups(&settings.proc_root, pid) else {
            continue;
        };
        let path = procfs::cgroup_path(&text, mode);
        let Some(target) = targets.iter().find(|t| t.cgroups.owns(path)) else {
            continue;
        };
        if let (Some(root), Some(dir)) = (&root, target.cgroups.protected_dir(path)) {
            register(
                guard,
                state,
                &target.victim.uid,
                target.protection,
                &root.join(dir.trim_start_matches('/')),
            );
        }
        if guard
            .protect_process(&settings.proc_root, pid, target.protection)
            .is_ok()
        {
            covered += 1;
        }
    }
    // Pods no longer protected (deleted, finished, or no policy says so any more).
    let live: HashSet<&str> = targets.iter().map(|t| t.victim.uid.as_str()).collect();
    let gone: Vec<String> = state
        .cookies
        .keys()
        .filter(|uid| !live.contains(uid.as_str()))
        .cloned()
        .collect();
    for uid in gone {
        if let Some((_, ids)) = state.cgroups.remove(&uid) {
            for id in ids {
                let _ = guard.unprotect_cgroup(id);
            }
        }
        if let Some(cookie) = state.cookies.remove(&uid) {
            match guard.remove_cookie(cookie) {
                Ok(n) => tracing::info!(pod_uid = %uid, keys = n, "pod no longer protected"),
                Err(e) => {
                    tracing::warn!(pod_uid = %uid, error = %e, "removing a pod's protection failed")
                }
            }
        }
    }
    covered
}

/// Reads the ring buffer on a thread of its own (waiting in poll(2)) and hands the events to the
/// reporter until the receiver is gone or `stop` is set.
fn read_events(
    mut events: Events,
    tx: tokio::sync::mpsc::Sender<Result<Event>>,
    stop: Arc<AtomicBool>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    while !stop.load(Ordering::SeqCst) {
        let ready = {
            let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(250u16))
        };
        match ready {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "waiting on the guard's ring buffer failed");
                std::thread::sleep(std::time::Duration::from_millis(250));
                continue;
            }
        }
        while let Some(event) = events.pop() {
            if tx.blocking_send(event).is_err() {
                return;
            }
        }
    }
}

/// Who the accessor is: a pod on this node (by the cgroup the event names, else by its /proc
/// entry), or not in a pod.
fn actor(
    settings: &Settings,
    mode: CgroupMode,
    pods: &Store<Pod>,
    index: &ActorIndex,
    event: &Event,
) -> Actor {
    if let Some((pod, container)) = index
        .lock()
        .expect("index lock")
        .get(&event.actor_cgroup)
        .cloned()
    {
        return Actor {
            pod: Some((pod, container)),
        };
    }
    let pid = event.actor_tgid;
    let Ok(text) = procfs::process_cgroups(&settings.proc_root, pid) else {
        return Actor { pod: None };
    };
    let path = procfs::cgroup_path(&text, mode);
    for pod in pods.state() {
        let Some(cgroups) = PodCgroups::from_pod(&pod) else {
            continue;
        };
        if cgroups.owns(path) {
            let container = cgroups.container(path).unwrap_or("?").to_owned();
            return Actor {
                pod: Some((
                    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                    container,
                )),
            };
        }
    }
    Actor { pod: None }
}

fn mode_label(mode: Mode) -> ModeLabel {
    match (mode.path, mode.may_stop) {
        (CheckPath::Lsm, true) => ModeLabel::LsmBlock,
        (CheckPath::Lsm, false) => ModeLabel::LsmAlert,
        (CheckPath::Tracepoint, true) => ModeLabel::TracepointKill,
        (CheckPath::Tracepoint, false) => ModeLabel::TracepointAlert,
    }
}

/// Everything the reporter needs.
struct Reporting {
    settings: Arc<Settings>,
    cgroup_mode: CgroupMode,
    mode: Mode,
    pods: Store<Pod>,
    victims: Victims,
    index: ActorIndex,
    metrics: Arc<Metrics>,
    client: kube::Client,
    limiter: RateLimiter,
}

/// The `reportingController` of the guard's Events.
pub const REPORTING_CONTROLLER: &str = "phantom.dev/guard";

impl Reporting {
    /// Creates the Event itself: kube's `Recorder` folds Events that share a reason into one
    /// series and keeps only the first message, which would lose the accessor of every later one
    /// (the rate limit here folds only identical accesses, and says how many).
    async fn publish(&self, victim: &Victim, reason: &str, note: String, taken: Taken) {
        use k8s_openapi::api::events::v1::Event as KubeEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let event = KubeEvent {
            metadata: ObjectMeta {
                // `<pod>.<hex nanoseconds>` as the kubelet names its Events (1.20 validates a
                // generateName as a whole name, so `<pod>.` is refused).
                name: Some(format!(
                    "{}.{:x}",
                    // Room for the suffix within the 253 characters of a name.
                    &victim.name[..victim.name.len().min(230)],
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default()
                )),
                namespace: Some(victim.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(victim.name.clone()),
                namespace: Some(victim.namespace.clone()),
                uid: Some(victim.uid.clone()),
                ..ObjectReference::default()
            }),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some("Warning".into()),
            action: Some(
                match taken {
                    Taken::Alerted => "Alert",
                    Taken::Killed => "Kill",
                    Taken::Refused => "Refuse",
                }
                .into(),
            ),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(format!(
                "{REPORTING_CONTROLLER}/{}",
                self.settings.node_name
            )),
            ..KubeEvent::default()
        };
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &victim.namespace);
        if let Err(e) = api.create(&Default::default(), &event).await {
            tracing::warn!(namespace = %victim.namespace, pod = %victim.name, error = %e, "recording the detection's Event failed");
        }
    }

    async fn handle(&mut self, event: Event) {
        let Some(victim) = self
            .victims
            .lock()
            .expect("victims lock")
            .get(&event.cookie)
            .cloned()
        else {
            tracing::warn!(
                cookie = event.cookie,
                "a detection for a pod no longer protected"
            );
            return;
        };
        let taken = Taken::of(&event, self.mode);
        let detection = report::primary(&event);
        if taken == Taken::Killed && event.detections.contains(Detection::Ptrace) {
            let (proc_root, pid) = (self.settings.proc_root.clone(), event.target_host_tgid);
            tokio::spawn(async move {
                for delay in [0, 50, 200, 1000] {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    if resume::continue_if_stopped(&proc_root, pid) {
                        tracing::info!(pid, "continued the victim a killed tracer left stopped");
                    }
                }
            });
        }
        let actor = actor(
            &self.settings,
            self.cgroup_mode,
            &self.pods,
            &self.index,
            &event,
        );
        self.metrics
            .detections
            .get_or_create(&DetectionLabels {
                namespace: victim.namespace.clone(),
                detection: detection.into(),
                action: taken.into(),
            })
            .inc();
        tracing::warn!(
            target: "phantom_guard::detection",
            namespace = %victim.namespace,
            pod = %victim.name,
            detection = detection.as_str(),
            action = taken.as_str(),
            actor_pid = event.actor_tgid,
            // Quoted: the accessor chooses its comm (prctl), newlines included.
            actor_comm = ?event.comm,
            actor_uid = event.actor_uid,
            actor_pod = actor.pod.as_ref().map(|(p, c)| format!("{p}/{c}")).unwrap_or_default(),
            target_pid = event.target_host_tgid,
            "memory access to a protected process"
        );
        let key = RepeatKey {
            victim_pod: format!("{}/{}", victim.namespace, victim.name),
            detection,
            actor_comm: event.comm.clone(),
            actor_uid: event.actor_uid,
            taken,
        };
        match self.limiter.admit(key, Instant::now()) {
            Admit::Report { folded } => {
                let note = report::message(&event, &actor, taken, folded);
                self.publish(&victim, report::reason(detection), note, taken)
                    .await;
            }
            Admit::Fold => {
                self.metrics.folded.inc();
            }
        }
    }

    /// Folded repeats whose window passed without a new access.
    async fn flush(&mut self) {
        for (key, folded) in self.limiter.due(Instant::now()) {
            let Some((namespace, name)) = key.victim_pod.split_once('/') else {
                continue;
            };
            let victim = self
                .victims
                .lock()
                .expect("victims lock")
                .values()
                .find(|v| v.namespace == namespace && v.name == name)
                .cloned();
            if let Some(victim) = victim {
                let note = format!(
                    "{folded} more {} access{} by {:?} (uid {}) since the last report: {}",
                    key.detection.as_str(),
                    if folded == 1 { "" } else { "es" },
                    key.actor_comm,
                    key.actor_uid,
                    key.taken.as_str()
                );
                self.publish(&victim, report::reason(key.detection), note, key.taken)
                    .await;
            }
        }
    }
}

/// Applies the node's heartbeat Lease; a failure is logged (the guard keeps guarding).
async fn beat(
    leases: &Api<k8s_openapi::api::coordination::v1::Lease>,
    settings: &Settings,
    mode: Mode,
    lsm: &str,
    protected: usize,
) {
    use kube::api::{Patch, PatchParams};
    let lease = heartbeat::lease(
        &settings.node_name,
        mode.as_str(),
        lsm,
        protected,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let name = heartbeat::lease_name(&settings.node_name);
    if let Err(e) = leases
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
    {
        tracing::warn!(lease = %name, namespace = %settings.namespace, error = %e, "writing the guard's heartbeat Lease failed; phantomctl status will call this node's guard stale");
    }
}

/// The field manager of the guard's server-side applies.
pub const FIELD_MANAGER: &str = "phantom-guard";

/// Runs the guard until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let settings = Arc::new(settings);
    let cgroup_mode = procfs::detect_cgroup_mode(&settings.cgroup_root);
    let mut guard = Guard::load(&Options {
        may_stop: settings.may_stop,
        try_lsm: settings.try_lsm,
        cgroup_mode,
        proc_root: settings.proc_root.clone(),
    })?;
    let mode = guard.mode();
    tracing::info!(mode = mode.as_str(), lsm = guard.lsm_refusal().unwrap_or("in use"), cgroups = ?cgroup_mode, "guard loaded");
    let lsm_state = guard.lsm_refusal().unwrap_or("in use").to_owned();
    let events = guard.take_events().ok_or_else(|| Error::BpfMissing {
        what: "event ring buffer".into(),
    })?;
    let guard = Arc::new(Mutex::new(guard));

    let metrics = Arc::new(Metrics::default());
    metrics
        .mode
        .get_or_create(&ModeLabels {
            mode: mode_label(mode),
        })
        .set(1);
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);

    let client = kube::Client::try_default()
        .await
        .map_err(|source| Error::Kubernetes {
            what: "connecting to the API server".into(),
            source,
        })?;
    let changed = Arc::new(Notify::new());
    let synced: [Arc<AtomicBool>; 3] = Default::default();
    let (policies, _policy_task) = phantom_policies::cluster::reflect(
        Api::<PhantomPolicy>::all(client.clone()),
        changed.clone(),
        synced[0].clone(),
    );
    let (namespaces, _namespace_task) = phantom_policies::cluster::reflect(
        Api::<Namespace>::all(client.clone()),
        changed.clone(),
        synced[1].clone(),
    );
    let (pods, _pod_task) = phantom_policies::cluster::reflect_selected(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name)),
        changed.clone(),
        synced[2].clone(),
    );
    let all_synced = {
        let synced = synced.clone();
        move || synced.iter().all(|s| s.load(Ordering::SeqCst))
    };

    let status = {
        let registry = registry.clone();
        let all_synced = all_synced.clone();
        phantom_process::status::serve_status(
            settings.status_listen,
            Arc::new(move || {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                text
            }),
            Arc::new(move || {
                if all_synced() {
                    Ok(format!("ready: {}\n", mode.as_str()))
                } else {
                    Err(
                        "not ready: policies, namespaces or this node's pods not listed yet\n"
                            .into(),
                    )
                }
            }),
        )
        .map_err(|e| Error::Config(format!("the status port: {e}")))?
    };
    tracing::info!(addr = %status.addr, "status port");

    let victims: Victims = Arc::default();
    let index: ActorIndex = Arc::default();
    let resync_task = {
        let index = index.clone();
        let (guard, settings, metrics, victims) = (
            guard.clone(),
            settings.clone(),
            metrics.clone(),
            victims.clone(),
        );
        let (policies, namespaces, pods) = (policies.clone(), namespaces.clone(), pods.clone());
        let state = Arc::new(Mutex::new(State::default()));
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), &settings.namespace);
        let settings_for_beat = settings.clone();
        let lsm = lsm_state.clone();
        let beat_every = std::time::Duration::from_secs(
            phantom_crds::wellknown::guard::LEASE_SECONDS as u64 / 3,
        );
        let mut last_beat: Option<(Instant, usize)> = None;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = changed.notified() => {}
                    () = tokio::time::sleep(settings.resync) => {}
                }
                if !all_synced() {
                    continue;
                }
                let policy_list: Vec<PhantomPolicy> =
                    policies.state().iter().map(|p| (**p).clone()).collect();
                let (set, warnings) = MonitoringSet::compile(&policy_list);
                for w in warnings {
                    tracing::warn!(policy = %w.policy, "{}", w.message);
                }
                let (guard, state, settings, namespaces, pods, victims, metrics, index) = (
                    guard.clone(),
                    state.clone(),
                    settings.clone(),
                    namespaces.clone(),
                    pods.clone(),
                    victims.clone(),
                    metrics.clone(),
                    index.clone(),
                );
                let round = tokio::task::spawn_blocking(move || {
                    let mut state = state.lock().expect("state lock");
                    let targets = targets(&set, &pods, &namespaces, &mut state);
                    *victims.lock().expect("victims lock") = targets
                        .iter()
                        .map(|t| (t.protection.cookie, t.victim.clone()))
                        .collect();
                    // Walked once for both the pods' own directories and the accessor index.
                    let dirs = hierarchy(&settings.cgroup_root, cgroup_mode)
                        .map(|root| cgroup_dirs(&root))
                        .unwrap_or_default();
                    let mut guard = guard.lock().expect("guard lock");
                    resync(
                        &mut guard,
                        &mut state,
                        &targets,
                        &settings,
                        cgroup_mode,
                        &dirs,
                    );
                    let protected = targets.len();
                    metrics.protected_pods.set(protected as i64);
                    metrics
                        .protected_threads
                        .set(guard.protected_threads() as i64);
                    metrics.dropped_events.set(guard.dropped_events() as i64);
                    drop(guard);
                    let on_node: Vec<(String, PodCgroups)> = pods
                        .state()
                        .iter()
                        .filter_map(|pod| {
                            Some((
                                format!("{}/{}", pod.namespace()?, pod.name_any()),
                                PodCgroups::from_pod(pod)?,
                            ))
                        })
                        .collect();
                    *index.lock().expect("index lock") = index_pods(&dirs, &on_node);
                    protected
                })
                .await;
                match round {
                    Ok(protected) => {
                        // Renewed every third of its duration, and at once when the count moves.
                        let due = last_beat.is_none_or(|(at, count): (Instant, usize)| {
                            at.elapsed() >= beat_every || count != protected
                        });
                        if due {
                            last_beat = Some((Instant::now(), protected));
                            beat(&leases, &settings_for_beat, mode, &lsm, protected).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "a resync round failed"),
                }
            }
        })
    };

    let (report_task, reader_stop, reader) = {
        let mut reporting = Reporting {
            settings: settings.clone(),
            cgroup_mode,
            mode,
            pods: pods.clone(),
            victims: victims.clone(),
            index: index.clone(),
            metrics: metrics.clone(),
            client: client.clone(),
            limiter: RateLimiter::new(settings.repeat_window),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("guard-events".into())
                .spawn(move || read_events(events, tx, stop))
                .map_err(|source| Error::Procfs {
                    path: "the guard's event reader thread".into(),
                    source,
                })?
        };
        let task = tokio::spawn(async move {
            let mut flush = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(Ok(event)) => reporting.handle(event).await,
                        Some(Err(e)) => tracing::error!(error = %e, "a detection record does not decode"),
                        None => break,
                    },
                    _ = flush.tick() => reporting.flush().await,
                }
            }
        });
        (task, stop, reader)
    };

    shutdown.await;
    tracing::info!("shutting down: the programs detach with the guard");
    resync_task.abort();
    report_task.abort();
    reader_stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
    drop(status);
    Ok(())
}
