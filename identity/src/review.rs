//! Who is asking: the pod's projected ServiceAccount token, reviewed by the API server
//! (TokenReview) for the caller's audience (the broker's, the node agent's). Only a token bound to a pod names one (the API server
//! adds the pod's name and UID to the reviewed user's extra fields), so a plain ServiceAccount
//! token — or one another pod's owner copied — is refused or names that other pod.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// The pod a reviewed token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReviewedPod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// The identity a reviewed token proves: its pod, and its ServiceAccount (in the pod's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub pod: ReviewedPod,
    pub service_account: String,
}

/// Why a token proves no pod identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the ServiceAccount token was not accepted by the API server ({0})")]
    NotAuthenticated(String),
    #[error(
        "the token is not for audience {audience} (it is for {found}); mount a projected token with that audience"
    )]
    Audience { audience: String, found: String },
    #[error("the token names {0}, not a ServiceAccount")]
    NotServiceAccount(String),
    #[error(
        "the token of ServiceAccount {0} is not bound to a pod; use the pod's projected ServiceAccount token"
    )]
    NotPodBound(String),
}

fn only(extra: Option<&Vec<String>>) -> Option<&str> {
    match extra.map(Vec::as_slice) {
        Some([one]) if !one.is_empty() => Some(one),
        _ => None,
    }
}

/// What a TokenReview's status proves, for `audience`.
pub fn identity(status: &TokenReviewStatus, audience: &str) -> Result<Reviewed, IdentityError> {
    if status.authenticated != Some(true) {
        return Err(IdentityError::NotAuthenticated(
            status
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(IdentityError::Audience {
            audience: audience.to_owned(),
            found: if audiences.is_empty() {
                "no audience".into()
            } else {
                audiences.join(", ")
            },
        });
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, name)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(IdentityError::NotServiceAccount(username));
    };
    let extra = user.extra.unwrap_or_default();
    let (Some(pod_name), Some(pod_uid)) = (only(extra.get(POD_NAME)), only(extra.get(POD_UID)))
    else {
        return Err(IdentityError::NotPodBound(format!("{namespace}/{name}")));
    };
    Ok(Reviewed {
        pod: ReviewedPod {
            uid: pod_uid.to_owned(),
            name: pod_name.to_owned(),
            namespace: namespace.to_owned(),
        },
        service_account: name.to_owned(),
    })
}

/// Reviews `token` against the API server for `audience`.
pub async fn review(client: &Client, token: &str, audience: &str) -> Result<Reviewed> {
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &request)
        .await
        .map_err(|source| Error::Review { source })?;
    Ok(identity(&answer.status.unwrap_or_default(), audience)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(username: &str, extra: &[(&str, &str)]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["phantom-broker".into()]),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_bound_token_names_its_pod_and_service_account() {
        let reviewed = identity(
            &status(
                "system:serviceaccount:payments:api",
                &[(POD_NAME, "api-0"), (POD_UID, "uid-1")],
            ),
            "phantom-broker",
        )
        .unwrap();
        assert_eq!(reviewed.pod.uid, "uid-1");
        assert_eq!(reviewed.pod.name, "api-0");
        assert_eq!(reviewed.pod.namespace, "payments");
        assert_eq!(reviewed.service_account, "api");
    }

    #[test]
    fn tokens_that_prove_no_pod_are_refused_with_the_reason() {
        let plain = status("system:serviceaccount:payments:api", &[]);
        assert_eq!(
            identity(&plain, "phantom-broker").unwrap_err(),
            IdentityError::NotPodBound("payments/api".into())
        );
        let user = status("alice", &[(POD_NAME, "x"), (POD_UID, "y")]);
        assert!(matches!(
            identity(&user, "phantom-broker").unwrap_err(),
            IdentityError::NotServiceAccount(_)
        ));
        let wrong_audience = identity(
            &status(
                "system:serviceaccount:payments:api",
                &[(POD_NAME, "api-0"), (POD_UID, "uid-1")],
            ),
            "openbao",
        )
        .unwrap_err();
        assert!(matches!(wrong_audience, IdentityError::Audience { .. }));
        let refused = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token expired".into()),
            ..Default::default()
        };
        assert_eq!(
            identity(&refused, "phantom-broker").unwrap_err(),
            IdentityError::NotAuthenticated("token expired".into())
        );
    }
}
