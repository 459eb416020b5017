//! What an authenticated user may do: roles bound per tenant, narrowed by node label
//! selectors.
//!
//! | role       | permissions                                   |
//! |------------|-----------------------------------------------|
//! | `admin`    | everything (also access policies)             |
//! | `operator` | read nodes, connect to nodes                  |
//! | `viewer`   | read nodes                                    |
//! | `auditor`  | read the audit log, read nodes                |
//!
//! A binding applies to a node when its selector is empty or every `key=value` of it is
//! among the node's labels. Permissions that are not about one node (join tokens, audit,
//! users) come only from bindings with an empty selector: a binding narrowed to some
//! nodes never grants tenant-wide powers.

use adit_store::{Labels, Node, RoleBinding};

use crate::auth::Principal;

/// Something a request may need to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadNodes,
    Connect,
    RevokeNodes,
    ManageJoinTokens,
    ReadAudit,
    ManageUsers,
    /// Read and change access policies (admins of the whole tenant).
    ManagePolicies,
}

impl Permission {
    /// Whether the permission is about one node (and selectors narrow it).
    pub fn is_node_scoped(self) -> bool {
        matches!(self, Self::ReadNodes | Self::Connect | Self::RevokeNodes)
    }
}

/// Whether `role` carries `perm`. Unknown roles carry nothing.
pub fn role_grants(role: &str, perm: Permission) -> bool {
    use Permission::*;
    match role {
        "admin" => true,
        "operator" => matches!(perm, ReadNodes | Connect),
        "viewer" => matches!(perm, ReadNodes),
        "auditor" => matches!(perm, ReadAudit | ReadNodes),
        _ => false,
    }
}

/// Whether `selector` matches a node with `labels` (an empty selector matches all).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// Whether `p` may do `perm`, on `node` for node-scoped permissions.
///
/// A node-scoped permission asked without a node, and every other permission, needs a
/// binding with an empty selector. A node of another tenant is never allowed.
pub fn allowed(p: &Principal, perm: Permission, node: Option<&Node>) -> bool {
    if node.is_some_and(|n| n.tenant_id != p.tenant_id) {
        return false;
    }
    p.bindings.iter().any(|b| binding_allows(b, perm, node))
}

/// Whether some binding of `p` could grant `perm` on some node (used to tell "you may not
/// read nodes at all" from "no node matches your selectors").
pub fn allowed_somewhere(p: &Principal, perm: Permission) -> bool {
    p.bindings.iter().any(|b| role_grants(&b.role, perm))
}

/// Whether `p` may open streams to `node`.
pub fn can_connect(p: &Principal, node: &Node) -> bool {
    allowed(p, Permission::Connect, Some(node))
}

fn binding_allows(b: &RoleBinding, perm: Permission, node: Option<&Node>) -> bool {
    if !role_grants(&b.role, perm) {
        return false;
    }
    match node {
        Some(n) if perm.is_node_scoped() => selector_matches(&b.selector, &n.labels),
        _ => b.selector.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_store::NodeStatus;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn principal(bindings: &[(&str, &[(&str, &str)])]) -> Principal {
        Principal {
            user_id: "u".into(),
            user: "alice".into(),
            tenant_id: "t".into(),
            tenant: "default".into(),
            bindings: bindings
                .iter()
                .map(|(role, sel)| RoleBinding {
                    id: "b".into(),
                    tenant_id: "t".into(),
                    user_id: "u".into(),
                    role: role.to_string(),
                    selector: labels(sel),
                    created_at: 0,
                })
                .collect(),
            token_id: "j".into(),
            expires_at: 0,
            api_token: false,
        }
    }

    fn node(tenant: &str, l: &[(&str, &str)]) -> Node {
        Node {
            id: "n".into(),
            tenant_id: tenant.into(),
            name: "n".into(),
            labels: labels(l),
            status: NodeStatus::Offline,
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

    #[test]
    fn roles() {
        use Permission::*;
        let all = [
            ReadNodes,
            Connect,
            RevokeNodes,
            ManageJoinTokens,
            ReadAudit,
            ManageUsers,
        ];
        let n = node("t", &[]);
        let admin = principal(&[("admin", &[])]);
        assert!(all.iter().all(|p| allowed(&admin, *p, Some(&n))));
        let op = principal(&[("operator", &[])]);
        assert!(allowed(&op, ReadNodes, Some(&n)) && can_connect(&op, &n));
        assert!(!allowed(&op, RevokeNodes, Some(&n)) && !allowed(&op, ManageJoinTokens, None));
        let viewer = principal(&[("viewer", &[])]);
        assert!(allowed(&viewer, ReadNodes, Some(&n)) && !can_connect(&viewer, &n));
        let auditor = principal(&[("auditor", &[])]);
        assert!(allowed(&auditor, ReadAudit, None) && allowed(&auditor, ReadNodes, Some(&n)));
        assert!(!allowed(&auditor, ManageUsers, None) && !can_connect(&auditor, &n));
        let weird = principal(&[("root", &[])]);
        assert!(all.iter().all(|p| !allowed(&weird, *p, Some(&n))));
        assert!(all.iter().all(|p| !allowed(&principal(&[]), *p, Some(&n))));
    }

    #[test]
    fn selectors_narrow_node_permissions_only() {
        let op = principal(&[("operator", &[("site", "a")])]);
        assert!(can_connect(&op, &node("t", &[("site", "a"), ("x", "y")])));
        assert!(!can_connect(&op, &node("t", &[("site", "b")])));
        assert!(!can_connect(&op, &node("t", &[])));
        assert!(!allowed(&op, Permission::ReadNodes, None));
        assert!(allowed_somewhere(&op, Permission::ReadNodes));

        // A narrowed admin does not get tenant-wide powers.
        let admin_a = principal(&[("admin", &[("site", "a")])]);
        assert!(!allowed(&admin_a, Permission::ManageJoinTokens, None));
        assert!(!allowed(
            &admin_a,
            Permission::ReadAudit,
            Some(&node("t", &[("site", "a")]))
        ));
        assert!(allowed(
            &admin_a,
            Permission::RevokeNodes,
            Some(&node("t", &[("site", "a")]))
        ));

        let multi = principal(&[("operator", &[("site", "a"), ("env", "prod")])]);
        assert!(!can_connect(&multi, &node("t", &[("site", "a")])));
        assert!(can_connect(
            &multi,
            &node("t", &[("site", "a"), ("env", "prod")])
        ));
    }

    #[test]
    fn other_tenant_never_allowed() {
        let admin = principal(&[("admin", &[])]);
        assert!(!can_connect(&admin, &node("other", &[])));
    }
}
