//! The status reconcilers (controller-rs style): one kube-runtime Controller per resource, all
//! reconciled again whenever a new policy set is published. Each writes the status the snapshot
//! in force implies ([`crate::status`]) by server-side apply with the controller's field manager,
//! and records an Event when an object starts or stops compiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use phantom_crds::{
    AttestationRequirement, CommonStatus, PhantomPolicy, SecretBinding, condition_types,
};
use phantom_policies::store::PolicyStore;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::instrument;

use crate::metrics::{KindLabels, Metrics, Reconciled};
use crate::status::{binding_status, policy_status, requirement_status, same};
use crate::{Error, Result};

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub store: Arc<PolicyStore>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub field_manager: String,
    /// Where Events about cluster-scoped objects go (see [`crate::manager`]).
    pub events_namespace: String,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("field_manager", &self.field_manager)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        field_manager: &str,
        events_namespace: &str,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), Reporter::from(field_manager.to_owned())),
            client,
            store,
            metrics,
            field_manager: field_manager.to_owned(),
            events_namespace: events_namespace.to_owned(),
            failures: Mutex::default(),
        }
    }

    fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Every object is looked at again this often even without a change (namespace labels decide a
/// binding's `Admitted` and are not watched here).
const RESYNC: Duration = Duration::from_secs(300);

/// `Kind/name` or `Kind/namespace/name`: the object in logs, errors and the backoff table.
fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{}/{ns}/{name}", K::kind(&())),
        None => format!("{}/{name}", K::kind(&())),
    }
}

async fn apply_status<K>(ctx: &Context, api: Api<K>, obj: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(&ctx.field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "writing the status of {} {}",
        K::kind(&()),
        key(obj)
    )))?;
    Ok(())
}

/// An Event when the object starts or stops compiling (the message names field and position).
async fn record_transition<K>(
    ctx: &Context,
    obj: &K,
    before: Option<&CommonStatus>,
    after: &CommonStatus,
) where
    K: Resource<DynamicType = ()>,
{
    let was = before.map(|s| s.is_true(condition_types::COMPILED));
    let now = after.is_true(condition_types::COMPILED);
    if was == Some(now) || (was.is_none() && now) {
        return;
    }
    let message = after
        .condition(condition_types::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let event = if now {
        Event {
            type_: EventType::Normal,
            reason: "Compiled".into(),
            note: Some(message),
            action: "Compile".into(),
            secondary: None,
        }
    } else {
        let first = after
            .condition(condition_types::COMPILED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let mut note = format!("{first}; {message}");
        note.truncate(1000);
        Event {
            type_: EventType::Warning,
            reason: "CompileFailed".into(),
            note: Some(note),
            action: "Compile".into(),
            secondary: None,
        }
    };
    let mut reference = obj.object_ref(&());
    if reference.namespace.is_none() {
        // Cluster-scoped (PhantomPolicy, AttestationRequirement): see `crate::manager`.
        reference.namespace = Some(ctx.events_namespace.clone());
    }
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(object = %key(obj), error = %e, "recording an Event failed");
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn timed<K: Reconciled>(
    ctx: &Context,
    work: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    let started = Instant::now();
    let result = work.await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&KindLabels { kind: K::KIND })
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Reconciles a PhantomPolicy's status.
#[instrument(skip(ctx, policy), fields(policy = %policy.name_any()))]
pub async fn reconcile_policy(policy: Arc<PhantomPolicy>, ctx: Arc<Context>) -> Result<Action> {
    timed::<PhantomPolicy>(&ctx, async {
        let snapshot = ctx.store.snapshot();
        if !snapshot.synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let status = policy_status(&policy, &snapshot, &now());
        if policy.status.as_ref().is_none_or(|s| !same(s, &status)) {
            apply_status(&ctx, Api::all(ctx.client.clone()), &*policy, &status).await?;
            record_transition(&ctx, &*policy, policy.status.as_ref(), &status).await;
        }
        ctx.succeeded(&key(&*policy));
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// Reconciles an AttestationRequirement's status.
#[instrument(skip(ctx, requirement), fields(requirement = %requirement.name_any()))]
pub async fn reconcile_requirement(
    requirement: Arc<AttestationRequirement>,
    ctx: Arc<Context>,
) -> Result<Action> {
    timed::<AttestationRequirement>(&ctx, async {
        let snapshot = ctx.store.snapshot();
        if !snapshot.synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let status = requirement_status(&requirement, &snapshot, &now());
        if requirement
            .status
            .as_ref()
            .is_none_or(|s| !same(s, &status))
        {
            apply_status(&ctx, Api::all(ctx.client.clone()), &*requirement, &status).await?;
            record_transition(&ctx, &*requirement, requirement.status.as_ref(), &status).await;
        }
        ctx.succeeded(&key(&*requirement));
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// Reconciles a SecretBinding's status (compiled, and admitted by which policies).
#[instrument(skip(ctx, binding), fields(binding = %key(&*binding)))]
pub async fn reconcile_binding(binding: Arc<SecretBinding>, ctx: Arc<Context>) -> Result<Action> {
    timed::<SecretBinding>(&ctx, async {
        let snapshot = ctx.store.snapshot();
        if !snapshot.synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let namespace = binding.namespace().unwrap_or_default();
        let namespace_object = Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&namespace)
            .await
            .map_err(Error::kube(format!("reading namespace {namespace}")))?
            .and_then(|ns| serde_json::to_value(ns).ok())
            .unwrap_or_default();
        let status = binding_status(&binding, &snapshot, &namespace_object, &now());
        let unchanged = binding.status.as_ref().is_some_and(|s| {
            same(&s.common, &status.common) && s.admitted_by == status.admitted_by
        });
        if !unchanged {
            apply_status(
                &ctx,
                Api::namespaced(ctx.client.clone(), &namespace),
                &*binding,
                &status,
            )
            .await?;
            record_transition(
                &ctx,
                &*binding,
                binding.status.as_ref().map(|s| &s.common),
                &status.common,
            )
            .await;
        }
        ctx.succeeded(&key(&*binding));
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// Requeues a failed object with exponential backoff (1 s doubling to 5 min) and counts it.
pub fn error_policy<K: Resource<DynamicType = ()> + Reconciled>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = key(&*obj);
    let failures = ctx.failed(&key);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&KindLabels { kind: K::KIND })
        .inc();
    let delay = Duration::from_secs(1u64 << failures.min(9).saturating_sub(1))
        .min(Duration::from_secs(300));
    tracing::warn!(object = %key, %error, retry_in = ?delay, "reconciliation failed");
    Action::requeue(delay)
}

/// A stream that yields whenever `published` changes (a new policy set).
fn on_publication(
    published: watch::Receiver<u64>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(published, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Runs the three status controllers until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let published = ctx.store.subscribe();
    let policies = Controller::new(
        Api::<PhantomPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(on_publication(published.clone()))
    .run(reconcile_policy, error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    let requirements = Controller::new(
        Api::<AttestationRequirement>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(on_publication(published.clone()))
    .run(reconcile_requirement, error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    let bindings = Controller::new(
        Api::<SecretBinding>::all(client),
        watcher::Config::default(),
    )
    .reconcile_all_on(on_publication(published))
    .run(reconcile_binding, error_policy, ctx)
    .for_each(|_| futures::future::ready(()));
    futures::join!(policies, requirements, bindings);
}
