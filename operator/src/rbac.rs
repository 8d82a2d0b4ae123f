//! The one table of API calls the operator makes. The mock-API-server tests check every call
//! against it, and `tests/operator/check_chart.py` checks the Helm chart's ClusterRole equals it.

/// One RBAC rule: API group, resource, verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource (plural, with `/subresource` when needed).
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

const CHILD: &[&str] = &["list", "watch", "patch", "delete"];

/// Everything the operator's service account needs, and nothing more.
pub const RULES: &[Rule] = &[
    Rule {
        group: "cello.dev",
        resource: "cellapps",
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "cello.dev",
        resource: "cellapps/status",
        verbs: &["patch"],
    },
    // Children; `configmaps` also gets `get` because apps reference ConfigMaps (config hash).
    Rule {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "patch", "delete"],
    },
    Rule {
        group: "",
        resource: "services",
        verbs: CHILD,
    },
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: CHILD,
    },
    Rule {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: CHILD,
    },
    Rule {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: CHILD,
    },
    Rule {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: CHILD,
    },
    Rule {
        group: "keda.sh",
        resource: "scaledobjects",
        verbs: CHILD,
    },
    Rule {
        group: "keda.sh",
        resource: "triggerauthentications",
        verbs: CHILD,
    },
    Rule {
        group: "cert-manager.io",
        resource: "certificates",
        verbs: CHILD,
    },
    Rule {
        group: "monitoring.coreos.com",
        resource: "servicemonitors",
        verbs: CHILD,
    },
    Rule {
        group: "monitoring.coreos.com",
        resource: "podmonitors",
        verbs: CHILD,
    },
    // Referenced Secrets: read for the config hash, watched to restart pods on change.
    Rule {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// With leader election on: a Role in the operator's own namespace (never cluster-wide).
pub const LEADER_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];

/// Whether `verb` on `group`/`resource` is in [`RULES`] or [`LEADER_RULES`].
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .chain(LEADER_RULES)
        .any(|r| r.group == group && r.resource == resource && r.verbs.contains(&verb))
}

/// Map an HTTP request to (group, resource, verb), the way the API server's authorizer does.
pub fn classify(method: &str, path: &str, query: &str) -> Option<(String, String, &'static str)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (group, rest) = rest;
    let rest: &[&str] = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let watch = query.split('&').any(|p| p == "watch=true");
    let (resource, named) = match rest {
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group.to_string(), resource, verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_the_authorizer() {
        assert_eq!(
            classify(
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/shop",
                "fieldManager=x"
            ),
            Some(("apps".into(), "deployments".into(), "patch"))
        );
        assert_eq!(
            classify("GET", "/api/v1/namespaces/prod/configmaps", "labelSelector=a"),
            Some(("".into(), "configmaps".into(), "list"))
        );
        assert_eq!(
            classify(
                "PATCH",
                "/apis/cello.dev/v1alpha1/namespaces/prod/cellapps/shop/status",
                ""
            ),
            Some(("cello.dev".into(), "cellapps/status".into(), "patch"))
        );
        assert_eq!(
            classify("GET", "/apis/cello.dev/v1alpha1/cellapps", "watch=true"),
            Some(("cello.dev".into(), "cellapps".into(), "watch"))
        );
        assert!(allows("apps", "deployments", "patch"));
        assert!(!allows("apps", "deployments", "update"));
        assert!(!allows("", "secrets", "patch"));
    }
}
