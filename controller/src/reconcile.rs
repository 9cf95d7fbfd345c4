//! The status reconcilers (controller-rs style): one kube-runtime Controller per resource, all
//! reconciled again whenever a new policy set is published. Each writes the status the snapshot
//! in force implies ([`crate::status`]) by server-side apply with the controller's field manager,
//! and records an Event when an object starts or stops compiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use phantom_crds::{
    AttestationRequirement, CommonStatus, PhantomPolicy, SecretBinding, condition_types,
};
use phantom_policies::store::{PolicyStore, Snapshot};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::instrument;

use crate::metrics::{KindLabels, Metrics, Reconciled};
use crate::status::{binding_status, policy_status, requirement_status, same, unreadable_status};
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
fn key<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => format!("{}/{ns}/{name}", K::kind(&())),
        None => format!("{}/{name}", K::kind(&())),
    }
}

/// `name` or `namespace/name`, as policy-set errors name objects.
fn id(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The watched object as `K`, or `None` when it does not read as one: it passed the CRD schema
/// (or got in while validation was off) but not Phantom's types. Such an object must not stop
/// the others: its status says what is wrong.
fn typed<K: Reconciled + serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<K> {
    phantom_policies::cluster::read_as::<K>(object, K::KIND.as_str()).ok()
}

async fn apply_status<K>(ctx: &Context, meta: &ObjectMeta, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let name = meta.name.clone().unwrap_or_default();
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match &meta.namespace {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
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
        key::<K>(meta)
    )))?;
    Ok(())
}

/// An Event when the object starts or stops compiling (the message names field and position).
async fn record_transition<K>(
    ctx: &Context,
    obj: &DynamicObject,
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
    let mut reference = obj.object_ref(&ApiResource::erase::<K>(&()));
    if reference.namespace.is_none() {
        // Cluster-scoped (PhantomPolicy, AttestationRequirement): see `crate::manager`.
        reference.namespace = Some(ctx.events_namespace.clone());
    }
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(object = %key::<K>(&obj.metadata), error = %e, "recording an Event failed");
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

/// The status of the object in `snapshot`, when it reads as its type.
type StatusOf<K> = fn(&K, &Snapshot, &Time) -> CommonStatus;

/// Reconciles a PhantomPolicy's status.
#[instrument(skip(ctx, object), fields(policy = %object.name_any()))]
pub async fn reconcile_policy(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_cluster_scoped::<PhantomPolicy>(&object, &ctx, policy_status, |p| p.status.as_ref())
        .await
}

/// Reconciles an AttestationRequirement's status.
#[instrument(skip(ctx, object), fields(requirement = %object.name_any()))]
pub async fn reconcile_requirement(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action> {
    reconcile_cluster_scoped::<AttestationRequirement>(&object, &ctx, requirement_status, |r| {
        r.status.as_ref()
    })
    .await
}

async fn reconcile_cluster_scoped<K>(
    object: &DynamicObject,
    ctx: &Context,
    status_of: StatusOf<K>,
    current: fn(&K) -> Option<&CommonStatus>,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>
        + Reconciled
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    timed::<K>(ctx, async {
        let snapshot = ctx.store.snapshot();
        if !snapshot.synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let Some(typed) = typed::<K>(object) else {
            return reconcile_unreadable::<K>(object, ctx, &snapshot).await;
        };
        let status = status_of(&typed, &snapshot, &now());
        if current(&typed).is_none_or(|s| !same(s, &status)) {
            apply_status::<K>(ctx, &object.metadata, &status).await?;
            record_transition::<K>(ctx, object, current(&typed), &status).await;
        }
        ctx.succeeded(&key::<K>(&object.metadata));
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// Reconciles a SecretBinding's status (compiled, and admitted by which policies).
#[instrument(skip(ctx, object), fields(binding = %key::<SecretBinding>(&object.metadata)))]
pub async fn reconcile_binding(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    timed::<SecretBinding>(&ctx, async {
        let snapshot = ctx.store.snapshot();
        if !snapshot.synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let Some(binding) = typed::<SecretBinding>(&object) else {
            return reconcile_unreadable::<SecretBinding>(&object, &ctx, &snapshot).await;
        };
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
            apply_status::<SecretBinding>(&ctx, &object.metadata, &status).await?;
            record_transition::<SecretBinding>(
                &ctx,
                &object,
                binding.status.as_ref().map(|s| &s.common),
                &status.common,
            )
            .await;
        }
        ctx.succeeded(&key::<SecretBinding>(&object.metadata));
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// An object that does not read as `K`: its status carries the error (and whether its last good
/// version stays in force), with a `CompileFailed` Event when it stops reading.
async fn reconcile_unreadable<K>(
    object: &DynamicObject,
    ctx: &Context,
    snapshot: &Snapshot,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // The status part may still read (SecretBinding's wraps the common one).
    let previous: Option<CommonStatus> = object
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok());
    let status = unreadable_status(
        &K::kind(&()),
        &id(&object.metadata),
        object.metadata.generation,
        previous.as_ref(),
        snapshot,
        &now(),
    );
    if previous.as_ref().is_none_or(|s| !same(s, &status)) {
        match apply_status::<K>(ctx, &object.metadata, &status).await {
            Ok(()) => record_transition::<K>(ctx, object, previous.as_ref(), &status).await,
            // API servers before 1.28 validate the whole object on a status write, so one whose
            // spec their schema refuses cannot be given a status: an Event says it instead.
            Err(Error::Kube {
                source: kube::Error::Api(refusal),
                ..
            }) if refusal.code == 422 => {
                let note = status
                    .condition(condition_types::COMPILED)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                publish_unreadable::<K>(ctx, object, note).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// A Warning Event `Unreadable` on an object whose status cannot be written.
async fn publish_unreadable<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &DynamicObject,
    mut note: String,
) {
    note.truncate(1000);
    let event = Event {
        type_: EventType::Warning,
        reason: "Unreadable".into(),
        note: Some(note),
        action: "Read".into(),
        secondary: None,
    };
    let mut reference = object.object_ref(&ApiResource::erase::<K>(&()));
    if reference.namespace.is_none() {
        reference.namespace = Some(ctx.events_namespace.clone());
    }
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(object = %key::<K>(&object.metadata), error = %e, "recording an Event failed");
    }
}

/// Requeues a failed object with exponential backoff (1 s doubling to 5 min) and counts it.
fn error_policy<K: Resource<DynamicType = ()> + Reconciled>(
    obj: Arc<DynamicObject>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = key::<K>(&obj.metadata);
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

/// A Controller on `K`'s objects kept untyped, so one that does not read as `K` cannot fail the
/// list every other object comes in.
fn untyped<K: Resource<DynamicType = ()>>(client: &Client) -> Controller<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        watcher::Config::default(),
        resource,
    )
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
    let policies = untyped::<PhantomPolicy>(&client)
        .reconcile_all_on(on_publication(published.clone()))
        .run(reconcile_policy, error_policy::<PhantomPolicy>, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let requirements = untyped::<AttestationRequirement>(&client)
        .reconcile_all_on(on_publication(published.clone()))
        .run(
            reconcile_requirement,
            error_policy::<AttestationRequirement>,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let bindings = untyped::<SecretBinding>(&client)
        .reconcile_all_on(on_publication(published))
        .run(reconcile_binding, error_policy::<SecretBinding>, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::join!(policies, requirements, bindings);
}
