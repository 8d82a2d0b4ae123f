//! The one table of API calls the operator makes. Each resource lists what the code does with
//! it ([`Use`]); the verbs follow from that, the way the API server authorizes the calls. The
//! mock-API-server tests check every call against it, and `tests/operator/test_manifests.py`
//! checks the Helm chart's (Cluster)Role equals it.

/// What the operator does with a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Server-side apply. The API server authorizes an apply of an object that does not exist
    /// yet as `create`, and of an existing one as `patch`; `get` lets the field manager read it.
    Apply,
    /// Server-side apply of a subresource of an existing object (`/status`): `patch` only.
    ApplySubresource,
    /// Find children by label and delete the unwanted ones: `list` + `delete`.
    DeleteOrphans,
    /// Watched (reflector cache): `list` + `watch`.
    Watch,
    /// Read one object by name: `get`.
    Read,
    /// Events: `create`, and `patch` to bump the count of a repeated one.
    Record,
    /// The Lease of leader election: `get`, `create`, `update`.
    Lease,
    /// Owner references with `blockOwnerDeletion: true`: where the
    /// OwnerReferencesPermissionEnforcement admission plugin runs (e.g. OpenShift), setting
    /// one needs `update` on the owner's `finalizers` subresource.
    BlockOwnerDeletion,
}

impl Use {
    /// The verbs this use needs.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Use::Apply => &["get", "create", "patch"],
            Use::ApplySubresource => &["patch"],
            Use::DeleteOrphans => &["list", "delete"],
            Use::Watch => &["list", "watch"],
            Use::Read => &["get"],
            Use::Record => &["create", "patch"],
            Use::Lease => &["get", "create", "update"],
            Use::BlockOwnerDeletion => &["update"],
        }
    }
}

/// One RBAC rule: API group, resource, and what the code does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource (plural, with `/subresource` when needed).
    pub resource: &'static str,
    /// What the operator does with it.
    pub uses: &'static [Use],
}

/// Verbs in the order the API server documents them, so rendered rules are stable.
const VERB_ORDER: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

impl Rule {
    /// The union of the verbs of [`Rule::uses`], in a fixed order.
    pub fn verbs(&self) -> Vec<&'static str> {
        VERB_ORDER
            .into_iter()
            .filter(|v| self.uses.iter().any(|u| u.verbs().contains(v)))
            .collect()
    }
}

/// A managed child kind: applied, watched, and deleted when no longer wanted.
const CHILD: &[Use] = &[Use::Apply, Use::Watch, Use::DeleteOrphans];
/// A managed child kind whose CRD is optional: not watched (the CRD may be absent), so orphans
/// are found with a label-selected list.
const OPTIONAL_CHILD: &[Use] = &[Use::Apply, Use::DeleteOrphans];

/// Everything the operator's service account needs, and nothing more.
pub const RULES: &[Rule] = &[
    Rule {
        group: "cello.dev",
        resource: "cellapps",
        uses: &[Use::Watch, Use::Read],
    },
    Rule {
        group: "cello.dev",
        resource: "cellapps/status",
        uses: &[Use::ApplySubresource],
    },
    Rule {
        group: "cello.dev",
        resource: "cellapps/finalizers",
        uses: &[Use::BlockOwnerDeletion],
    },
    // Children; ConfigMaps are also referenced by apps (read for the config hash).
    Rule {
        group: "",
        resource: "configmaps",
        uses: &[Use::Apply, Use::Watch, Use::DeleteOrphans, Use::Read],
    },
    Rule {
        group: "",
        resource: "services",
        uses: CHILD,
    },
    Rule {
        group: "apps",
        resource: "deployments",
        uses: CHILD,
    },
    Rule {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        uses: CHILD,
    },
    Rule {
        group: "policy",
        resource: "poddisruptionbudgets",
        uses: CHILD,
    },
    Rule {
        group: "networking.k8s.io",
        resource: "ingresses",
        uses: CHILD,
    },
    Rule {
        group: "keda.sh",
        resource: "scaledobjects",
        uses: OPTIONAL_CHILD,
    },
    Rule {
        group: "keda.sh",
        resource: "triggerauthentications",
        uses: OPTIONAL_CHILD,
    },
    Rule {
        group: "cert-manager.io",
        resource: "certificates",
        uses: OPTIONAL_CHILD,
    },
    Rule {
        group: "monitoring.coreos.com",
        resource: "servicemonitors",
        uses: OPTIONAL_CHILD,
    },
    Rule {
        group: "monitoring.coreos.com",
        resource: "podmonitors",
        uses: OPTIONAL_CHILD,
    },
    // Referenced Secrets: read for the config hash, watched to restart pods on change.
    Rule {
        group: "",
        resource: "secrets",
        uses: &[Use::Read, Use::Watch],
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        uses: &[Use::Record],
    },
];

/// With leader election on: a Role in the operator's own namespace (never cluster-wide).
pub const LEADER_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resource: "leases",
    uses: &[Use::Lease],
}];

/// Whether `verb` on `group`/`resource` is in [`RULES`] or [`LEADER_RULES`].
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    allowed_by(RULES.iter().chain(LEADER_RULES), group, resource, verb)
}

/// Whether `verb` on `group`/`resource` is granted by `rules`.
pub fn allowed_by<'a>(rules: impl IntoIterator<Item = &'a Rule>, group: &str, resource: &str, verb: &str) -> bool {
    rules
        .into_iter()
        .any(|r| r.group == group && r.resource == resource && r.verbs().contains(&verb))
}

/// The verbs the API server checks for one call: `classify`'s verb, plus `create` for a
/// server-side apply that created the object (the server answers such an apply with 201).
pub fn required_verbs(
    method: &str,
    path: &str,
    query: &str,
    created: bool,
) -> Option<(String, String, Vec<&'static str>)> {
    let (group, resource, verb) = classify(method, path, query)?;
    let mut verbs = vec![verb];
    if method == "PATCH" && created {
        verbs.push("create");
    }
    Some((group, resource, verbs))
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

    #[test]
    fn server_side_apply_of_a_new_object_needs_create() {
        let path = "/api/v1/namespaces/prod/configmaps/shop-config";
        let q = "force=true&fieldManager=cello-operator";
        let (_, _, verbs) = required_verbs("PATCH", path, q, true).expect("classified");
        assert_eq!(verbs, ["patch", "create"]);
        let (_, _, verbs) = required_verbs("PATCH", path, q, false).expect("classified");
        assert_eq!(verbs, ["patch"]);
        // Every applied kind can be created, and every orphan-deleted kind listed and deleted.
        for r in RULES {
            let v = r.verbs();
            if r.uses.contains(&Use::Apply) {
                assert!(["get", "create", "patch"].iter().all(|x| v.contains(x)), "{r:?}");
            }
            if r.uses.contains(&Use::DeleteOrphans) {
                assert!(["list", "delete"].iter().all(|x| v.contains(x)), "{r:?}");
            }
        }
        // A patch-only grant (the chart before this table derived verbs) is refused.
        let patch_only = Rule {
            group: "",
            resource: "configmaps",
            uses: &[Use::ApplySubresource],
        };
        assert!(!allowed_by([&patch_only], "", "configmaps", "create"));
    }

    #[test]
    fn the_docs_rbac_table_lists_every_rule() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator.md");
        let docs = std::fs::read_to_string(path).expect("docs/operator.md");
        let rows: Vec<Vec<String>> = docs
            .lines()
            .filter(|l| l.starts_with("| "))
            .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        for r in RULES.iter().chain(LEADER_RULES) {
            let group = if r.group.is_empty() { "\"\"" } else { r.group };
            let verbs = r.verbs().join(", ");
            assert!(
                rows.iter().any(|c| c.len() >= 3
                    && c[0] == group
                    && c[1].split(", ").any(|x| x == r.resource)
                    && c[2] == verbs),
                "docs/operator.md has no RBAC row `{group} | {} | {verbs}`",
                r.resource
            );
        }
    }
}
