//! Access policies as the proxy enforces them: the tenant's stored policies, resolved for
//! one node ([`adit_api::policy::resolve`]: node > projects > tenant > built-in defaults).

use adit_api::policy::{self, EffectivePolicy, Layer, Level, PolicyInfo, PolicyRules};
use adit_store::{Node, Policy, PolicyLevel, Store, StoreError};

/// The rules of a stored policy. Rules the control plane wrote are always valid; a row
/// that does not decode is treated as denying everything (fail closed).
pub fn rules_of(p: &Policy) -> PolicyRules {
    match serde_json::from_value::<PolicyRules>(p.rules.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(level = p.level.as_str(), scope = %p.scope_key, error = %e,
                "a stored policy does not decode; treating it as deny-all");
            let mut r = PolicyRules::default();
            for flag in policy::FLAGS {
                r.set_flag(flag, Some(policy::Rule::Deny));
            }
            r
        }
    }
}

/// The API view of a stored policy; `nodes` names node scopes.
pub fn policy_info(p: &Policy, nodes: &[Node]) -> PolicyInfo {
    let (scope, selector, node_id, node) = match p.level {
        PolicyLevel::Tenant => ("tenant".to_owned(), None, None, None),
        PolicyLevel::Project => (
            format!("project:{}", p.scope_key),
            policy::parse_selector(&p.scope_key).ok(),
            None,
            None,
        ),
        PolicyLevel::Node => (
            format!("node:{}", p.scope_key),
            None,
            Some(p.scope_key.clone()),
            nodes
                .iter()
                .find(|n| n.id == p.scope_key)
                .map(|n| n.name.clone()),
        ),
    };
    PolicyInfo {
        scope,
        level: p.level.as_str().to_owned(),
        selector,
        node_id,
        node,
        rules: rules_of(p),
        updated_by: p.updated_by.clone(),
        updated_at: p.updated_at,
    }
}

/// The policy that applies to `node`, from the policies of its tenant.
pub fn effective_from(node: &Node, policies: &[Policy]) -> EffectivePolicy {
    let mut named: Vec<(Level, String, PolicyRules)> = Vec::new();
    for p in policies.iter().filter(|p| p.tenant_id == node.tenant_id) {
        match p.level {
            PolicyLevel::Tenant => named.push((Level::Tenant, "tenant".into(), rules_of(p))),
            PolicyLevel::Project => {
                // A selector that does not parse matches nothing.
                let matches = policy::parse_selector(&p.scope_key)
                    .is_ok_and(|sel| crate::authz::selector_matches(&sel, &node.labels));
                if matches {
                    named.push((
                        Level::Project,
                        format!("project {}", p.scope_key),
                        rules_of(p),
                    ));
                }
            }
            PolicyLevel::Node if p.scope_key == node.id => {
                named.push((Level::Node, format!("node {}", node.name), rules_of(p)))
            }
            PolicyLevel::Node => {}
        }
    }
    let layers: Vec<Layer<'_>> = named
        .iter()
        .map(|(level, name, rules)| Layer {
            level: *level,
            name,
            rules,
        })
        .collect();
    policy::resolve(&node.id, &node.name, &layers)
}

/// The policy that applies to `node` now.
pub fn effective(store: &dyn Store, node: &Node) -> Result<EffectivePolicy, StoreError> {
    let policies = store.policies_for_node(&node.tenant_id, &node.id)?;
    Ok(effective_from(node, &policies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_api::policy::Request;
    use adit_store::NodeStatus;
    use serde_json::json;

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            id: "n1".into(),
            tenant_id: "t".into(),
            name: "dev1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status: NodeStatus::Online,
            last_seen: None,
            agent_version: None,
            os: None,
            hostname: None,
            addresses: vec![],
            cert_serial: None,
            cert_not_after: None,
            tunnel_mode: "persistent".into(),
            revoked_at: None,
            created_at: 0,
            actions: vec![],
        }
    }

    fn policy(tenant: &str, level: PolicyLevel, key: &str, rules: serde_json::Value) -> Policy {
        Policy {
            tenant_id: tenant.into(),
            level,
            scope_key: key.into(),
            rules,
            updated_by: "admin".into(),
            updated_at: 0,
        }
    }

    #[test]
    fn only_matching_scopes_of_the_nodes_tenant_apply() {
        let n = node(&[("env", "prod"), ("site", "a")]);
        let policies = [
            policy("t", PolicyLevel::Tenant, "", json!({"exec": "deny"})),
            // Another tenant's, another project's and another node's: ignored.
            policy("u", PolicyLevel::Tenant, "", json!({"shell": "deny"})),
            policy(
                "t",
                PolicyLevel::Project,
                "env=dev",
                json!({"file": "deny"}),
            ),
            policy("t", PolicyLevel::Node, "n2", json!({"query": "deny"})),
            policy(
                "t",
                PolicyLevel::Project,
                "env=prod,site=a",
                json!({"exec": "allow"}),
            ),
        ];
        let p = effective_from(&n, &policies);
        assert_eq!(p.flags["exec"].decided_by, "project env=prod,site=a");
        assert!(p.check(Request::Exec).is_ok());
        for flag in ["shell", "file", "query"] {
            assert_eq!(p.flags[flag].decided_by, "default", "{flag}");
        }
        let n = node(&[("env", "prod")]);
        let p = effective_from(&n, &policies);
        assert_eq!(
            p.check(Request::Exec).unwrap_err(),
            "exec is denied by the policy of tenant"
        );
    }

    #[test]
    fn a_rules_row_that_does_not_decode_denies_everything() {
        let n = node(&[]);
        let policies = [policy(
            "t",
            PolicyLevel::Node,
            "n1",
            json!({"exec": "maybe"}),
        )];
        let p = effective_from(&n, &policies);
        assert!(p.flags.values().all(|f| !f.allow));
        assert!(p.check(Request::Tcp("127.0.0.1:22")).is_err());
    }
}
