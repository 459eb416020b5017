//! The [`Store`] trait: everything the control plane and proxy persist.

use crate::error::{ConsumeError, StoreError};
use crate::model::{
    AuditEvent, AuditFilter, CertificateRecord, IssuedToken, JoinTokenRecord, Labels, Millis,
    NewEnrollment, Node, NodeFacts, NodeStatus, PresenceUpdate, RoleBinding, Tenant, TokenKind,
    User,
};
use crate::model::{
    NewRemoteAccess, RemoteAccess, RemoteAccessFilter, RemoteAccessState, StatusIndicator,
};
use crate::model::{NodeCommands, Policy, PolicyLevel};

/// Persistent state of an Adit deployment.
///
/// Implementations: [`SqliteStore`](crate::SqliteStore) (embedded default); a PostgreSQL
/// implementation follows and must pass the same suite (`testsuite` feature).
///
/// Contract shared by every method:
/// - Methods are synchronous and short; async callers may use `spawn_blocking`.
/// - **Tenant isolation**: a method taking `tenant_id` reads and changes only rows of that
///   tenant. Asked about another tenant's row it behaves exactly as if the row did not
///   exist (`None`, empty list, `false` or [`StoreError::NotFound`]). The `*_any_tenant`
///   methods and the node-id methods used by the proxy (whose caller identified the node by
///   its certificate) are the only ones that cross tenants, and they say so.
/// - Mutations of a row that does not exist return [`StoreError::NotFound`] unless the
///   method documents a `bool` result instead.
/// - Ids and `created_at` of tenants, users, role bindings and nodes are assigned by the
///   store.
pub trait Store: Send + Sync + 'static {
    // === tenants ===

    /// Creates a tenant. [`StoreError::Conflict`] if the name is taken.
    fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError>;
    fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError>;
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// All tenants, ordered by name.
    fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    // === users ===

    /// Creates an enabled user. [`StoreError::Conflict`] if the name exists in the tenant,
    /// [`StoreError::NotFound`] if the tenant does not exist.
    fn create_user(
        &self,
        tenant_id: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<User, StoreError>;
    fn user_by_name(&self, tenant_id: &str, name: &str) -> Result<Option<User>, StoreError>;
    fn user(&self, tenant_id: &str, id: &str) -> Result<Option<User>, StoreError>;
    /// Users of the tenant, ordered by name.
    fn list_users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError>;
    /// Deletes the user and its role bindings.
    fn delete_user(&self, tenant_id: &str, id: &str) -> Result<(), StoreError>;
    /// Sets the password hash and `credentials_changed_at = now`.
    fn set_password(
        &self,
        tenant_id: &str,
        id: &str,
        password_hash: &str,
    ) -> Result<(), StoreError>;
    /// Disables (or re-enables) a user; a disabled user must not be allowed to log in.
    fn set_user_disabled(
        &self,
        tenant_id: &str,
        id: &str,
        disabled: bool,
    ) -> Result<(), StoreError>;
    /// **Crosses tenants.** Users with this name in any tenant, for a login that does not
    /// name its tenant. The caller must refuse ambiguity rather than pick one.
    fn find_user_by_name_any_tenant(&self, name: &str) -> Result<Vec<User>, StoreError>;

    // === role bindings ===

    /// Binds `role` (one of [`ROLES`](crate::ROLES), else [`StoreError::InvalidInput`]) to a
    /// user of the tenant. [`StoreError::NotFound`] if the user is not in the tenant.
    fn bind_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: &str,
        selector: &Labels,
    ) -> Result<RoleBinding, StoreError>;
    /// Bindings of the tenant (of one user if `user_id` is given), oldest first.
    fn list_role_bindings(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<RoleBinding>, StoreError>;
    fn unbind_role(&self, tenant_id: &str, id: &str) -> Result<(), StoreError>;

    // === join tokens ===

    /// Stores a token exactly as given (id chosen by the caller). [`StoreError::Conflict`] if
    /// the id exists, [`StoreError::NotFound`] if the tenant does not.
    fn create_join_token(&self, rec: &JoinTokenRecord) -> Result<(), StoreError>;
    fn join_token(&self, tenant_id: &str, id: &str) -> Result<Option<JoinTokenRecord>, StoreError>;
    /// **Crosses tenants.** Enrolment knows only the token id.
    fn join_token_any_tenant(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError>;
    /// Tokens of the tenant (including revoked and expired ones), oldest first.
    fn list_join_tokens(&self, tenant_id: &str) -> Result<Vec<JoinTokenRecord>, StoreError>;
    /// Revokes the token at `now`. Returns `false` if the tenant has no such token; `true`
    /// otherwise (an already revoked token keeps its original `revoked_at`).
    fn revoke_join_token(&self, tenant_id: &str, id: &str, now: Millis)
        -> Result<bool, StoreError>;
    /// **Crosses tenants.** Atomically checks that the token is not revoked, not expired
    /// (`expires_at > now`) and has uses left, and counts one use. Returns the record after
    /// the increment. Concurrent callers can never together exceed `uses_allowed`.
    /// The caller verifies the secret against `secret_hash` before calling this.
    fn consume_join_token(&self, id: &str, now: Millis) -> Result<JoinTokenRecord, ConsumeError>;
    /// **Crosses tenants.** Enrols a node in one transaction: takes a use of the join token
    /// (as [`Store::consume_join_token`]), creates the node (as [`Store::create_node`], with
    /// the given id), records its first certificate and sets the node's certificate and
    /// facts, and appends the audit event. A crash at any point leaves all of it or none.
    /// [`ConsumeError::Store`] with [`StoreError::Conflict`] if the name is taken; the token
    /// use is not taken then.
    fn enroll_node(&self, e: &NewEnrollment) -> Result<(JoinTokenRecord, Node), ConsumeError>;
    /// What node `node_id` enrolled with ([`NewEnrollment::enrolled_with`]); `None` if
    /// the node is unknown or the value is empty.
    fn node_enrolled_with(&self, node_id: &str) -> Result<Option<String>, StoreError>;
    /// A retried enrolment whose first answer was lost, in one transaction: records
    /// `cert` as the node's certificate, revokes `replaced` (the certificate the lost
    /// answer carried, which no one holds) and appends `audit`. No join token use is taken.
    fn reissue_enrollment(
        &self,
        cert: &CertificateRecord,
        replaced: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;

    // === nodes ===

    /// Creates an offline node with the default tunnel mode. [`StoreError::Conflict`] if a
    /// non-revoked node of the tenant has this name (a revoked node's name may be reused).
    fn create_node(&self, tenant_id: &str, name: &str, labels: &Labels)
        -> Result<Node, StoreError>;
    fn node(&self, tenant_id: &str, id: &str) -> Result<Option<Node>, StoreError>;
    /// The node whose id is `key`, else the node named `key` (the non-revoked one if any,
    /// else the most recently created revoked one).
    fn node_by_id_or_name(&self, tenant_id: &str, key: &str) -> Result<Option<Node>, StoreError>;
    /// **Crosses tenants.** The proxy knows an agent by the node id in its certificate.
    fn node_any_tenant(&self, id: &str) -> Result<Option<Node>, StoreError>;
    /// Nodes of the tenant (including revoked ones), ordered by name.
    fn list_nodes(&self, tenant_id: &str) -> Result<Vec<Node>, StoreError>;
    /// Replaces the labels of a live (unrevoked) node of the tenant; `false` when there is
    /// no such node. Labels are the server's: only an admin sets them.
    fn set_node_labels(
        &self,
        tenant_id: &str,
        node_id: &str,
        labels: &Labels,
    ) -> Result<bool, StoreError>;
    /// Replaces the node's reported facts. Node id from an authenticated certificate.
    fn update_node_facts(&self, node_id: &str, facts: &NodeFacts) -> Result<(), StoreError>;
    /// Sets the status and `last_seen = now` (a node going offline was last seen then).
    fn set_node_status(
        &self,
        node_id: &str,
        status: NodeStatus,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Applies presence changes in order, in one transaction (one disk sync for many
    /// agents connecting at once). Updates of nodes that no longer exist are skipped.
    /// Node ids come from authenticated certificates.
    fn apply_presence(&self, updates: &[PresenceUpdate]) -> Result<(), StoreError>;
    /// Marks every node of every tenant offline, keeping `last_seen`; called at server start
    /// when no tunnel can exist yet. Returns how many nodes changed.
    fn mark_all_nodes_offline(&self) -> Result<u64, StoreError>;
    /// Records the node's current certificate.
    fn set_node_cert(
        &self,
        node_id: &str,
        serial: &str,
        not_after: Millis,
    ) -> Result<(), StoreError>;
    /// Revokes the node and all its certificates at `now`, in one transaction. Returns
    /// `false` if the tenant has no such node; `true` otherwise (an already revoked node
    /// keeps its original `revoked_at`, and any certificate recorded since is revoked too).
    fn revoke_node(&self, tenant_id: &str, id: &str, now: Millis) -> Result<bool, StoreError>;

    // === certificates ===

    /// Records an issued certificate. [`StoreError::Conflict`] if the serial exists,
    /// [`StoreError::NotFound`] if the node is not in the record's tenant.
    fn record_certificate(&self, rec: &CertificateRecord) -> Result<(), StoreError>;
    fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;
    /// Whether a certificate must be refused. **Fails closed**: `true` if the serial is
    /// revoked, its node is revoked, or the serial was never recorded (every certificate the
    /// CA issues is recorded before it is handed out).
    fn is_serial_revoked(&self, serial: &str) -> Result<bool, StoreError>;

    // === audit ===

    /// Appends an event and returns its `seq` (strictly increasing; `event.seq` is ignored).
    /// There is deliberately no method to change or delete an event.
    fn append_audit(&self, event: &AuditEvent) -> Result<i64, StoreError>;
    /// Appends `events` in order in one transaction (one commit, one sync to disk for
    /// all of them) and returns their `seq`s; all are stored or none.
    fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError>;
    /// The tenant's events matching `filter`, in `seq` order.
    fn list_audit(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    // === remote access configurations ===

    /// Creates a configuration for node `rec.instance` of `rec.tenant_id`
    /// ([`StoreError::NotFound`] if the tenant has no such node). The store generates the
    /// id (`rmtacconf-` + 8 lowercase alphanumerics, retrying on collision) and sets
    /// `desired_state = STARTED`, `current_state = CONFIGURED`, indicator `IN_PROGRESS`,
    /// status `"waiting for the node"`, no `local_port`, and every timestamp to now.
    fn create_remote_access(&self, rec: &NewRemoteAccess) -> Result<RemoteAccess, StoreError>;
    fn remote_access(
        &self,
        tenant_id: &str,
        resource_id: &str,
    ) -> Result<Option<RemoteAccess>, StoreError>;
    /// The tenant's configurations matching `filter`, newest first. Rows whose
    /// `current_state` is DELETED are left out unless `filter.include_deleted` (or the
    /// filter asks for that state).
    fn list_remote_access(
        &self,
        tenant_id: &str,
        filter: &RemoteAccessFilter,
    ) -> Result<Vec<RemoteAccess>, StoreError>;
    /// **Crosses tenants.** Every configuration whose `current_state` is not DELETED,
    /// oldest first (the reconcile loop reads this).
    fn active_remote_access(&self) -> Result<Vec<RemoteAccess>, StoreError>;
    /// Sets `expiration_timestamp` (and `updated_at`). [`StoreError::NotFound`] if the
    /// tenant has no such configuration or its `current_state` is DELETED.
    fn set_remote_access_expiration(
        &self,
        tenant_id: &str,
        resource_id: &str,
        expiration: Millis,
    ) -> Result<RemoteAccess, StoreError>;
    /// Sets `desired_state` (and `updated_at`). [`StoreError::NotFound`] if the tenant has
    /// no such configuration or its `current_state` is DELETED.
    fn set_remote_access_desired(
        &self,
        tenant_id: &str,
        resource_id: &str,
        desired: RemoteAccessState,
    ) -> Result<RemoteAccess, StoreError>;
    /// **Crosses tenants** (the reconcile loop knows configurations by id). In one UPDATE:
    /// `current_state = current`, the status, its indicator, `configuration_status_timestamp
    /// = updated_at = now`, and `local_port` when `Some` (a `None` keeps the stored port,
    /// so a deleted configuration still shows the port it had). `Some(0)` is
    /// [`StoreError::InvalidInput`].
    fn set_remote_access_status(
        &self,
        resource_id: &str,
        current: RemoteAccessState,
        indicator: StatusIndicator,
        status: &str,
        local_port: Option<u16>,
        now: Millis,
    ) -> Result<RemoteAccess, StoreError>;

    // === issued tokens (session and API tokens) ===

    /// Records an issued token (id = its `jti`, chosen by the caller).
    /// [`StoreError::Conflict`] if the id exists, [`StoreError::NotFound`] if the tenant
    /// does not.
    fn create_issued_token(&self, rec: &IssuedToken) -> Result<(), StoreError>;
    fn issued_token(&self, tenant_id: &str, id: &str) -> Result<Option<IssuedToken>, StoreError>;
    /// The tenant's tokens (of one kind if given), including revoked and expired ones,
    /// oldest first.
    fn list_issued_tokens(
        &self,
        tenant_id: &str,
        kind: Option<TokenKind>,
    ) -> Result<Vec<IssuedToken>, StoreError>;
    /// Revokes the token at `now`. `false` if the tenant has no such token; `true`
    /// otherwise (an already revoked token keeps its original `revoked_at`).
    fn revoke_issued_token(
        &self,
        tenant_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;

    // === policies ===

    /// Creates or replaces the policy of `(tenant_id, level, scope_key)`.
    /// [`StoreError::NotFound`] if the tenant does not exist, or for a node policy if the
    /// tenant has no node with id `scope_key`; [`StoreError::InvalidInput`] if a tenant
    /// policy has a scope key or another one has none.
    fn put_policy(&self, policy: &Policy) -> Result<(), StoreError>;
    /// Removes a policy; `false` if the tenant has none at that scope.
    fn delete_policy(
        &self,
        tenant_id: &str,
        level: PolicyLevel,
        scope_key: &str,
    ) -> Result<bool, StoreError>;
    /// The tenant's policies: the tenant's, then projects, then nodes, each by scope key.
    fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>, StoreError>;
    /// The policies that can apply to node `node_id`: the tenant's, every project's (by
    /// scope key), and that node's own, in that order; other nodes' policies are not read,
    /// so the cost does not grow with the fleet.
    fn policies_for_node(&self, tenant_id: &str, node_id: &str) -> Result<Vec<Policy>, StoreError>;

    // === per-node command counts ===

    /// Adds each entry's counts to its node's (the entry's `node_id` in `tenant_id`) and
    /// makes its `last` the node's last command unless a later one is recorded, all in
    /// one transaction. Entries whose node is not one of that tenant are skipped.
    fn apply_node_commands(&self, batch: &[(String, NodeCommands)]) -> Result<(), StoreError>;
    /// The command counts of the tenant's nodes that have any, by node id.
    fn node_commands(&self, tenant_id: &str) -> Result<Vec<NodeCommands>, StoreError>;
}
