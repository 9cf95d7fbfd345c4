//! `phantomctl status`: what Phantom is doing in the cluster, read from the API server — the
//! controller's leader, the webhook configurations and the circuit breaker, the published policy
//! set, each object's Ready condition, and pods admitted without Phantom. Exit 1 when something
//! needs attention.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};
use phantom_controller::config::{AdmissionEndpoint, WebhookSettings};
use phantom_controller::gaps::{self, GapPod};
use phantom_crds::wellknown::{BREAKER_ANNOTATION, POLICY_DIGEST_ANNOTATION, guard};
use phantom_crds::{
    AttestationRequirement, CommonStatus, PhantomPolicy, SecretBinding, condition_types,
};
use serde::Serialize;

/// Where to look.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub lease: String,
    pub mutating: String,
    pub validating: String,
    pub published_set: String,
    pub serving_secret: String,
    pub enable_label: (String, String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Configuration {
    pub kind: String,
    pub name: String,
    pub present: bool,
    /// `failurePolicy` of each webhook, in order.
    pub failure_policies: Vec<String>,
    pub breaker: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ObjectState {
    pub kind: String,
    pub name: String,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// One node's memory-access guard, from its heartbeat Lease.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GuardState {
    pub node: String,
    pub mode: String,
    /// Why BPF LSM is not used, or `in use`.
    pub lsm: String,
    pub protected_pods: String,
    /// Seconds since its last heartbeat.
    pub age_seconds: i64,
    /// The heartbeat is older than its Lease's duration: nothing detects on that node.
    pub stale: bool,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub leader: Option<String>,
    pub configurations: Vec<Configuration>,
    pub published_digest: Option<String>,
    pub objects: Vec<ObjectState>,
    pub gap_pods: Vec<GapPod>,
    /// The memory-access guards that have reported (none: the guard is not installed).
    pub guards: Vec<GuardState>,
    /// Why the seals of decision records were not checked (the serving Secret could not be
    /// read): only pods without any record are listed then.
    pub seals_unchecked: Option<String>,
}

impl Report {
    /// What needs attention, one line each (empty: all is well).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.leader.is_none() {
            out.push("no controller leads: is phantom-controller running? (its Lease is missing or expired)".to_owned());
        }
        for c in &self.configurations {
            if !c.present {
                out.push(format!("{} {} is missing: pods are admitted without Phantom until the controller restores it", c.kind, c.name));
            }
            if c.breaker.as_deref() == Some("open") {
                out.push(format!("the circuit breaker is open ({} {}): admission is down and non-critical namespaces fail open", c.kind, c.name));
            }
        }
        for o in self.objects.iter().filter(|o| !o.ready) {
            out.push(format!(
                "{} {} is not Ready ({}): {}",
                o.kind, o.name, o.reason, o.message
            ));
        }
        if !self.gap_pods.is_empty() {
            out.push(format!(
                "{} pod(s) admitted without Phantom: delete them so their owners re-create them through the webhook",
                self.gap_pods.len()
            ));
        }
        for g in self.guards.iter().filter(|g| g.stale) {
            out.push(format!(
                "the memory-access guard on node {} last reported {} s ago: nothing detects reads of protected pods' memory there until it is back",
                g.node, g.age_seconds
            ));
        }
        out
    }

    /// Human-readable text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Controller leader: {}\n",
            self.leader.as_deref().unwrap_or("none")
        ));
        for c in &self.configurations {
            if c.present {
                out.push_str(&format!(
                    "{} {}: present, failurePolicy {}{}\n",
                    c.kind,
                    c.name,
                    c.failure_policies.join("/"),
                    c.breaker
                        .as_deref()
                        .map(|b| format!(", circuit breaker {b}"))
                        .unwrap_or_default()
                ));
            } else {
                out.push_str(&format!("{} {}: MISSING\n", c.kind, c.name));
            }
        }
        out.push_str(&format!(
            "Published policy set: {}\n",
            self.published_digest.as_deref().unwrap_or("none yet")
        ));
        if !self.objects.is_empty() {
            out.push_str("\nOBJECT                                              READY  REASON\n");
            for o in &self.objects {
                out.push_str(&format!(
                    "{:<52}{:<7}{}\n",
                    format!("{}/{}", o.kind, o.name),
                    if o.ready { "True" } else { "False" },
                    o.reason
                ));
            }
        }
        out.push_str(&format!(
            "\nPods admitted without Phantom: {}\n",
            self.gap_pods.len()
        ));
        for g in &self.gap_pods {
            out.push_str(&format!(
                "  {}/{} (owner {}, created {}): {}\n",
                g.namespace,
                g.name,
                g.owner.as_deref().unwrap_or("none"),
                g.created.as_deref().unwrap_or("?"),
                g.reason.describe()
            ));
        }
        if !self.guards.is_empty() {
            out.push_str(
                "\nNODE                          GUARD MODE          PROTECTED  HEARTBEAT\n",
            );
            for g in &self.guards {
                out.push_str(&format!(
                    "{:<30}{:<20}{:<11}{}\n",
                    g.node,
                    g.mode,
                    g.protected_pods,
                    if g.stale {
                        format!("STALE ({} s)", g.age_seconds)
                    } else {
                        format!("{} s ago", g.age_seconds)
                    }
                ));
            }
        }
        if let Some(why) = &self.seals_unchecked {
            out.push_str(&format!(
                "  (decision seals not checked: {why}; pods with a forged record are not listed here — the controller checks them and records AdmittedWithoutPhantom Events)\n"
            ));
        }
        let problems = self.problems();
        if problems.is_empty() {
            out.push_str("\nAll is well.\n");
        } else {
            out.push_str("\nNeeds attention:\n");
            for p in problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }
}

fn object_state(kind: &str, name: String, status: Option<&CommonStatus>) -> ObjectState {
    let ready = status.and_then(|s| s.condition(condition_types::READY));
    ObjectState {
        kind: kind.into(),
        name,
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map_or_else(|| "NoStatus".into(), |c| c.reason.clone()),
        message: ready.map_or_else(
            || "no status yet: is phantom-controller running?".into(),
            |c| c.message.clone(),
        ),
    }
}

/// A configuration as found: `observed` holds its webhooks' failure policies and the breaker
/// annotation, `None` when it is missing.
fn configuration(
    kind: &str,
    name: &str,
    observed: Option<(Vec<Option<String>>, Option<String>)>,
) -> Configuration {
    let present = observed.is_some();
    let (policies, breaker) = observed.unwrap_or_default();
    Configuration {
        kind: kind.into(),
        name: name.into(),
        present,
        failure_policies: policies
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
        breaker,
    }
}

/// Reads everything from the API server.
pub async fn gather(client: &Client, target: &Target) -> anyhow::Result<Report> {
    use anyhow::Context as _;
    let lease = Api::<Lease>::namespaced(client.clone(), &target.namespace)
        .get_opt(&target.lease)
        .await
        .with_context(|| format!("reading Lease {}/{}", target.namespace, target.lease))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let leader = lease.and_then(|l| l.spec).and_then(|spec| {
        let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
        let renewed = spec.renew_time?.0;
        let duration = std::time::Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        );
        (renewed + duration > now).then_some(holder)
    });

    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(&target.mutating)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {}", target.mutating))?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt(&target.validating)
        .await
        .with_context(|| {
            format!(
                "reading ValidatingWebhookConfiguration {}",
                target.validating
            )
        })?;
    let configurations = vec![
        configuration(
            "MutatingWebhookConfiguration",
            &target.mutating,
            mutating.as_ref().map(|c| {
                (
                    c.webhooks
                        .iter()
                        .flatten()
                        .map(|w| w.failure_policy.clone())
                        .collect(),
                    c.annotations().get(BREAKER_ANNOTATION).cloned(),
                )
            }),
        ),
        configuration(
            "ValidatingWebhookConfiguration",
            &target.validating,
            validating.as_ref().map(|c| {
                (
                    c.webhooks
                        .iter()
                        .flatten()
                        .map(|w| w.failure_policy.clone())
                        .collect(),
                    c.annotations().get(BREAKER_ANNOTATION).cloned(),
                )
            }),
        ),
    ];
    let published_digest = Api::<ConfigMap>::namespaced(client.clone(), &target.namespace)
        .get_opt(&target.published_set)
        .await
        .with_context(|| {
            format!(
                "reading ConfigMap {}/{}",
                target.namespace, target.published_set
            )
        })?
        .and_then(|cm| cm.annotations().get(POLICY_DIGEST_ANNOTATION).cloned());

    let lp = ListParams::default();
    let mut objects = Vec::new();
    let crd_hint =
        "listing Phantom's resources (are the CRDs installed? kubectl apply -f crds/yaml/)";
    // Listed untyped: an object that does not read as its type (its status says why) must not
    // take the whole report down; only the status is read here.
    for (kind, resource) in [
        ("PhantomPolicy", ApiResource::erase::<PhantomPolicy>(&())),
        ("SecretBinding", ApiResource::erase::<SecretBinding>(&())),
        (
            "AttestationRequirement",
            ApiResource::erase::<AttestationRequirement>(&()),
        ),
    ] {
        for object in Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list(&lp)
            .await
            .context(crd_hint)?
            .items
        {
            let name = match object.namespace() {
                Some(namespace) => format!("{namespace}/{}", object.name_any()),
                None => object.name_any(),
            };
            let status: Option<CommonStatus> = object
                .data
                .get("status")
                .cloned()
                .and_then(|s| serde_json::from_value(s).ok());
            objects.push(object_state(kind, name, status.as_ref()));
        }
    }

    let mut settings = WebhookSettings::new(AdmissionEndpoint::Url(String::new()));
    settings.selection.enable_label = target.enable_label.clone();
    settings.excluded_namespaces.push(target.namespace.clone());
    let serving = format!("Secret {}/{}", target.namespace, target.serving_secret);
    let (key, seals_unchecked) = match Api::<Secret>::namespaced(client.clone(), &target.namespace)
        .get_opt(&target.serving_secret)
        .await
    {
        Ok(Some(secret)) => match gaps::stored_key(&secret, &serving) {
            Some(Ok(key)) => (Some(key), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, Some(format!("{serving} holds no decision.key yet"))),
        },
        Ok(None) => (None, Some(format!("{serving} does not exist"))),
        Err(e) => (None, Some(format!("reading {serving}: {e}"))),
    };
    let gap_pods = gaps::scan(client, &settings, key.as_ref()).await?;
    let guards = Api::<Lease>::namespaced(client.clone(), &target.namespace)
        .list(&ListParams::default().labels(&format!("{}=true", guard::LEASE_LABEL)))
        .await
        .with_context(|| format!("listing the guards' Leases in {}", target.namespace))?
        .items
        .iter()
        .map(|lease| guard_state(lease, now))
        .collect();
    Ok(Report {
        leader,
        configurations,
        published_digest,
        objects,
        gap_pods,
        guards,
        seals_unchecked,
    })
}

/// A guard's state from its Lease at `now`.
fn guard_state(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> GuardState {
    let annotation = |key: &str| {
        lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
            .unwrap_or_else(|| "?".into())
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let age_seconds = spec
        .renew_time
        .map(|t| (now - t.0).get_seconds())
        .unwrap_or(i64::MAX);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(guard::LEASE_SECONDS));
    GuardState {
        node: spec.holder_identity.unwrap_or_else(|| lease.name_any()),
        mode: annotation(guard::MODE_ANNOTATION),
        lsm: annotation(guard::LSM_ANNOTATION),
        protected_pods: annotation(guard::PROTECTED_PODS_ANNOTATION),
        age_seconds,
        stale: age_seconds > duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Report {
        Report {
            leader: Some("phantom-controller-0".into()),
            configurations: vec![Configuration {
                kind: "MutatingWebhookConfiguration".into(),
                name: "phantom-injector".into(),
                present: true,
                failure_policies: vec!["Fail".into(), "Fail".into()],
                breaker: Some("closed".into()),
            }],
            published_digest: Some("sha256:ab".into()),
            objects: vec![ObjectState {
                kind: "PhantomPolicy".into(),
                name: "payments".into(),
                ready: true,
                reason: "Enforced".into(),
                message: "in force".into(),
            }],
            gap_pods: Vec::new(),
            guards: vec![GuardState {
                node: "node1".into(),
                mode: "tracepoint-kill".into(),
                lsm: "EPERM".into(),
                protected_pods: "2".into(),
                age_seconds: 4,
                stale: false,
            }],
            seals_unchecked: None,
        }
    }

    #[test]
    fn a_healthy_cluster_needs_no_attention() {
        let r = healthy();
        assert!(r.problems().is_empty());
        let text = r.render();
        assert!(
            text.contains("failurePolicy Fail/Fail, circuit breaker closed"),
            "{text}"
        );
        assert!(text.contains("All is well."), "{text}");
        assert!(
            text.contains("node1") && text.contains("tracepoint-kill"),
            "{text}"
        );
    }

    #[test]
    fn a_stale_guard_needs_attention_and_its_lease_is_read() {
        use k8s_openapi::jiff::Timestamp;
        let now = Timestamp::from_second(10_000).unwrap();
        let lease = |renewed: i64| Lease {
            metadata: kube::api::ObjectMeta {
                name: Some("phantom-guard-node2".into()),
                annotations: Some(
                    [
                        (guard::MODE_ANNOTATION.to_owned(), "lsm-block".to_owned()),
                        (guard::PROTECTED_PODS_ANNOTATION.to_owned(), "7".to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some("node2".into()),
                lease_duration_seconds: Some(30),
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    Timestamp::from_second(renewed).unwrap(),
                )),
                ..Default::default()
            }),
        };
        let fresh = guard_state(&lease(9_990), now);
        assert_eq!(
            (
                fresh.node.as_str(),
                fresh.mode.as_str(),
                fresh.protected_pods.as_str(),
                fresh.age_seconds,
                fresh.stale
            ),
            ("node2", "lsm-block", "7", 10, false)
        );
        let stale = guard_state(&lease(9_000), now);
        assert!(stale.stale && stale.lsm == "?");
        let mut r = healthy();
        r.guards.push(stale);
        let problems = r.problems();
        assert!(
            problems.len() == 1 && problems[0].contains("node node2 last reported 1000 s ago"),
            "{problems:#?}"
        );
        assert!(r.render().contains("STALE (1000 s)"));
    }

    #[test]
    fn open_breaker_missing_configuration_broken_policy_and_gap_pods_are_named() {
        let mut r = healthy();
        r.configurations[0].breaker = Some("open".into());
        r.configurations.push(Configuration {
            kind: "ValidatingWebhookConfiguration".into(),
            name: "phantom-validator".into(),
            present: false,
            failure_policies: Vec::new(),
            breaker: None,
        });
        r.objects[0].ready = false;
        r.objects[0].reason = "PreviousVersionEnforced".into();
        r.gap_pods.push(GapPod {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: "u".into(),
            owner: Some("ReplicaSet/web".into()),
            created: None,
            reason: gaps::GapReason::ForgedSeal,
        });
        r.leader = None;
        let problems = r.problems();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let text = r.render();
        assert!(
            text.contains("ValidatingWebhookConfiguration phantom-validator: MISSING"),
            "{text}"
        );
        assert!(text.contains("shop/web-1 (owner ReplicaSet/web"), "{text}");
        assert!(text.contains("seal does not verify"), "{text}");
        assert!(text.contains("circuit breaker is open"), "{text}");
    }
}
