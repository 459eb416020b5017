//! The OpenAPI 3.0.3 document of the HTTP API (served at [`paths::OPENAPI`]).
//!
//! It is built from [`OPERATIONS`], one row per (method, path) the server routes, and the
//! JSON Schemas that `schemars` derives from the body types of this crate, so a changed
//! field shows up in the document without anyone editing it. What cannot be derived
//! (status codes, who may call what, query parameters of private types) is in the table;
//! `crates/server/tests/openapi.rs` fails when the table and the router disagree, and
//! `scripts/schemathesis.sh` checks real responses against the schemas.

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::{InstanceType, Schema, SchemaObject};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::policy::{EffectivePolicy, PolicyInfo, PolicyRules};
use crate::{
    paths, remote_access_state, ApiError, AuditEventInfo, AuditQuery, BindRoleRequest, CaInfo,
    CreateJoinTokenRequest, CreateRemoteAccessRequest, CreateTenantRequest, CreateUserRequest,
    CreatedJoinToken, CreatedTenant, EnrollRequest, EnrollResponse, JoinTokenInfo, LoginRequest,
    LoginResponse, NodeInfo, RemoteAccessInfo, RemoteAccessQuery, RenewRequest, RoleBindingInfo,
    SetPasswordRequest, TenantInfo, UpdateRemoteAccessRequest, UpdateUserRequest, UserInfo, WhoAmI,
    ROLE_NAMES,
};
use crate::{
    ApiTokenInfo, CreateApiTokenRequest, CreateSessionTokenRequest, CreatedApiToken,
    CreatedSessionToken, SessionTokenInfo,
};
use crate::{DemandRequest, DemandResponse, NodeLabelsRequest};
use crate::{PtyQuery, RecordingInfo, RecordingQuery};

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.0.3";

/// Name of the bearer security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <access token>` from [`paths::LOGIN`].
    Bearer,
    /// Nothing (the join token, if any, is in the body).
    Public,
    /// The node's client certificate (mutual TLS), which OpenAPI 3.0 cannot express.
    ClientCert,
}

/// Builds the schema of a type, registering its definitions with the generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A success response body.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// No body (204).
    Empty,
    /// `text/plain`.
    Text,
    /// `application/x-ndjson`: one value of this schema per line.
    JsonLines(SchemaFn),
    /// `application/x-asciicast`: an asciicast v2 recording.
    Asciicast,
    /// `101 Switching Protocols` to a WebSocket.
    WebSocket,
}

/// Query parameters of an operation.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    None,
    /// Every field of this struct (all optional) is a parameter.
    Struct(SchemaFn),
    /// Optional string parameters: (name, description).
    Strings(&'static [(&'static str, &'static str)]),
}

/// One row of the API: what is called, how, and what comes back.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Lowercase HTTP method, as OpenAPI spells it.
    pub method: &'static str,
    /// One of [`paths`]; `{name}` segments are path parameters.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub query: Query,
    /// JSON request body.
    pub request: Option<SchemaFn>,
    /// Success status and body.
    pub status: u16,
    pub response: Content,
    /// Error statuses the operation answers with an [`ApiError`] (401 is implied by
    /// [`Auth::Bearer`]).
    pub errors: &'static [u16],
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The schema of `T` itself rather than a reference to it (for query structs).
fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    T::json_schema(g)
}

fn jwks(_: &mut SchemaGenerator) -> Schema {
    from_json(json!({
        "type": "object",
        "description": "JSON Web Key Set of the ES256 keys the control plane signs with.",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kty", "crv", "x", "y", "kid", "alg", "use"],
                    "properties": {
                        "kty": { "type": "string", "enum": ["EC"] },
                        "crv": { "type": "string", "enum": ["P-256"] },
                        "x": { "type": "string" },
                        "y": { "type": "string" },
                        "kid": { "type": "string" },
                        "alg": { "type": "string", "enum": ["ES256"] },
                        "use": { "type": "string", "enum": ["sig"] }
                    }
                }
            }
        }
    }))
}

fn openapi_document(_: &mut SchemaGenerator) -> Schema {
    from_json(json!({
        "type": "object",
        "description": "This document.",
        "required": ["openapi", "info", "paths", "components"],
        "properties": {
            "openapi": { "type": "string" },
            "info": { "type": "object" },
            "paths": { "type": "object" },
            "components": { "type": "object" }
        }
    }))
}

fn from_json(v: Value) -> Schema {
    serde_json::from_value(v).unwrap_or(Schema::Bool(true))
}

/// A string that is one of `values`.
fn string_enum(values: &[&str]) -> Schema {
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: Some(values.iter().map(|v| json!(v)).collect()),
        ..Default::default()
    }
    .into()
}

// Field schemas for the body types (`#[schemars(schema_with = ...)]`): strings that
// only ever take a fixed set of values.

pub(crate) fn remote_access_state_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(remote_access_state::ALL)
}

pub(crate) fn status_indicator_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(&["IDLE", "IN_PROGRESS", "ERROR"])
}

pub(crate) fn node_status_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(&["online", "offline"])
}

pub(crate) fn audit_outcome_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(&["ok", "denied", "error"])
}

pub(crate) fn role_name_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(ROLE_NAMES)
}

pub(crate) fn stream_kind_schema(_: &mut SchemaGenerator) -> Schema {
    string_enum(&[crate::kinds::TCP])
}

const GET: &str = "get";
const POST: &str = "post";
const PATCH: &str = "patch";
const PUT: &str = "put";
const DELETE: &str = "delete";

/// Every operation the server routes. Keep in step with the router
/// (`crates/server/src/api/mod.rs`); the server's `openapi` test checks both ways.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: GET,
        path: paths::HEALTHZ,
        operation_id: "healthz",
        summary: "Liveness: `ok` while the process serves requests",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Text,
        errors: &[],
    },
    Operation {
        method: GET,
        path: paths::READYZ,
        operation_id: "readyz",
        summary: "Readiness: `ready` when the database answers, else 503",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Text,
        errors: &[503],
    },
    Operation {
        method: GET,
        path: paths::METRICS,
        operation_id: "metrics",
        summary: "Prometheus metrics (text exposition format 0.0.4)",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Text,
        errors: &[],
    },
    Operation {
        method: GET,
        path: paths::OPENAPI,
        operation_id: "openapi",
        summary: "This OpenAPI document",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(openapi_document),
        errors: &[],
    },
    Operation {
        method: GET,
        path: paths::CA,
        operation_id: "getCa",
        summary: "The CA certificate and its pin",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<CaInfo>),
        errors: &[],
    },
    Operation {
        method: GET,
        path: paths::JWKS,
        operation_id: "getJwks",
        summary: "The public keys that sign access tokens and grants (JWKS)",
        auth: Auth::Public,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(jwks),
        errors: &[],
    },
    Operation {
        method: POST,
        path: paths::LOGIN,
        operation_id: "login",
        summary: "Exchange a user name and password for an access token",
        auth: Auth::Public,
        query: Query::None,
        request: Some(schema::<LoginRequest>),
        status: 200,
        response: Content::Json(schema::<LoginResponse>),
        errors: &[400, 401, 413, 429],
    },
    Operation {
        method: GET,
        path: paths::WHOAMI,
        operation_id: "whoami",
        summary: "The caller: user, tenant and role bindings",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<WhoAmI>),
        errors: &[],
    },
    Operation {
        method: POST,
        path: paths::JOIN_TOKENS,
        operation_id: "createJoinToken",
        summary: "Create a join token (shown once) for enrolling devices",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateJoinTokenRequest>),
        status: 201,
        response: Content::Json(schema::<CreatedJoinToken>),
        errors: &[400, 403, 413],
    },
    Operation {
        method: GET,
        path: paths::JOIN_TOKENS,
        operation_id: "listJoinTokens",
        summary: "List the tenant's join tokens",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<JoinTokenInfo>>),
        errors: &[403],
    },
    Operation {
        method: DELETE,
        path: paths::JOIN_TOKEN,
        operation_id: "revokeJoinToken",
        summary: "Revoke a join token",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 204,
        response: Content::Empty,
        errors: &[403, 404],
    },
    Operation {
        method: POST,
        path: paths::ENROLL,
        operation_id: "enroll",
        summary: "Enrol a device with a join token: returns its client certificate",
        auth: Auth::Public,
        query: Query::None,
        request: Some(schema::<EnrollRequest>),
        status: 200,
        response: Content::Json(schema::<EnrollResponse>),
        errors: &[400, 401, 409, 413],
    },
    Operation {
        method: POST,
        path: paths::RENEW,
        operation_id: "renew",
        summary: "Renew a node certificate (authenticated by the current one, mutual TLS)",
        auth: Auth::ClientCert,
        query: Query::None,
        request: Some(schema::<RenewRequest>),
        status: 200,
        response: Content::Json(schema::<EnrollResponse>),
        errors: &[400, 401, 403, 413],
    },
    Operation {
        method: POST,
        path: paths::AGENT_DEMAND,
        operation_id: "agentDemand",
        summary: "Long poll of an on-demand agent: should the node hold a tunnel?",
        auth: Auth::ClientCert,
        query: Query::None,
        request: Some(schema::<DemandRequest>),
        status: 200,
        response: Content::Json(schema::<DemandResponse>),
        errors: &[400, 401, 403, 413],
    },
    Operation {
        method: GET,
        path: paths::NODES,
        operation_id: "listNodes",
        summary: "List the nodes the caller may read",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<NodeInfo>>),
        errors: &[403],
    },
    Operation {
        method: GET,
        path: paths::NODE,
        operation_id: "getNode",
        summary: "One node, by name or id",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<NodeInfo>),
        errors: &[404],
    },
    Operation {
        method: POST,
        path: paths::NODE_REVOKE,
        operation_id: "revokeNode",
        summary: "Revoke a node and its certificates; its tunnel is closed at once",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<NodeInfo>),
        errors: &[403, 404],
    },
    Operation {
        method: PATCH,
        path: paths::NODE_LABELS,
        operation_id: "setNodeLabels",
        summary: "Set or remove a node's labels (admins of the whole tenant; labels decide which roles and policies reach a node, so only the server sets them); streams they no longer allow are cut",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<NodeLabelsRequest>),
        status: 200,
        response: Content::Json(schema::<NodeInfo>),
        errors: &[400, 403, 404, 413],
    },
    Operation {
        method: GET,
        path: paths::NODE_PTY,
        operation_id: "nodePty",
        summary: "A shell in a PTY on the node over a WebSocket (browser terminal); needs `Upgrade: websocket`",
        auth: Auth::Bearer,
        query: Query::Struct(inline::<PtyQuery>),
        request: None,
        status: 101,
        response: Content::WebSocket,
        errors: &[400, 403, 404, 409, 426],
    },
    Operation {
        method: GET,
        path: paths::RECORDINGS,
        operation_id: "listRecordings",
        summary: "Recordings of the tenant's PTY sessions, newest first (admins and auditors)",
        auth: Auth::Bearer,
        query: Query::Struct(inline::<RecordingQuery>),
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<RecordingInfo>>),
        errors: &[400, 403, 404],
    },
    Operation {
        method: GET,
        path: paths::RECORDING,
        operation_id: "getRecording",
        summary: "One recording as an asciicast v2 file (admins and auditors)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Asciicast,
        errors: &[403, 404],
    },
    Operation {
        method: GET,
        path: paths::TENANTS,
        operation_id: "listTenants",
        summary: "List tenants (admins of the default tenant only)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<TenantInfo>>),
        errors: &[403],
    },
    Operation {
        method: POST,
        path: paths::TENANTS,
        operation_id: "createTenant",
        summary: "Create a tenant, optionally with its first admin",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateTenantRequest>),
        status: 201,
        response: Content::Json(schema::<CreatedTenant>),
        errors: &[400, 403, 409, 413],
    },
    Operation {
        method: GET,
        path: paths::USERS,
        operation_id: "listUsers",
        summary: "List the tenant's users with their roles",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<UserInfo>>),
        errors: &[403],
    },
    Operation {
        method: POST,
        path: paths::USERS,
        operation_id: "createUser",
        summary: "Create a user, optionally with role bindings",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateUserRequest>),
        status: 201,
        response: Content::Json(schema::<UserInfo>),
        errors: &[400, 403, 409, 413],
    },
    Operation {
        method: PATCH,
        path: paths::USER,
        operation_id: "updateUser",
        summary: "Disable or re-enable a user (never the caller, never the last admin); its tokens stop working at once",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<UpdateUserRequest>),
        status: 200,
        response: Content::Json(schema::<UserInfo>),
        errors: &[400, 403, 404, 409, 413],
    },
    Operation {
        method: DELETE,
        path: paths::USER,
        operation_id: "deleteUser",
        summary: "Delete a user (never the caller, never the last admin)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 204,
        response: Content::Empty,
        errors: &[403, 404, 409],
    },
    Operation {
        method: POST,
        path: paths::USER_PASSWORD,
        operation_id: "setPassword",
        summary: "Change one's own password (with `current`) or reset another user's (admin)",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<SetPasswordRequest>),
        status: 200,
        response: Content::Json(schema::<UserInfo>),
        errors: &[400, 403, 404, 413, 429],
    },
    Operation {
        method: GET,
        path: paths::ROLES,
        operation_id: "listRoleBindings",
        summary: "List role bindings, optionally of one user",
        auth: Auth::Bearer,
        query: Query::Strings(&[("user", "Only this user's bindings (user name or id).")]),
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<RoleBindingInfo>>),
        errors: &[400, 403, 404],
    },
    Operation {
        method: POST,
        path: paths::ROLES,
        operation_id: "bindRole",
        summary: "Give a user a role on the nodes a label selector matches",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<BindRoleRequest>),
        status: 201,
        response: Content::Json(schema::<RoleBindingInfo>),
        errors: &[400, 403, 404, 409, 413],
    },
    Operation {
        method: DELETE,
        path: paths::ROLE,
        operation_id: "unbindRole",
        summary: "Remove a role binding (never the last tenant-wide admin)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 204,
        response: Content::Empty,
        errors: &[403, 404, 409],
    },
    Operation {
        method: GET,
        path: paths::AUDIT,
        operation_id: "listAudit",
        summary: "A page of the tenant's audit events, oldest first",
        auth: Auth::Bearer,
        query: Query::Struct(inline::<AuditQuery>),
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<AuditEventInfo>>),
        errors: &[400, 403, 404],
    },
    Operation {
        method: GET,
        path: paths::AUDIT_EXPORT,
        operation_id: "exportAudit",
        summary: "Every matching audit event as JSON Lines, streamed",
        auth: Auth::Bearer,
        query: Query::Struct(inline::<AuditQuery>),
        request: None,
        status: 200,
        response: Content::JsonLines(schema::<AuditEventInfo>),
        errors: &[400, 403, 404],
    },
    Operation {
        method: POST,
        path: paths::REMOTE_ACCESS,
        operation_id: "createRemoteAccess",
        summary: "Create a remote access configuration (optionally a temporary endpoint)",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateRemoteAccessRequest>),
        status: 201,
        response: Content::Json(schema::<RemoteAccessInfo>),
        errors: &[400, 403, 404, 409, 413],
    },
    Operation {
        method: GET,
        path: paths::REMOTE_ACCESS,
        operation_id: "listRemoteAccess",
        summary: "List remote access configurations, newest first",
        auth: Auth::Bearer,
        query: Query::Struct(inline::<RemoteAccessQuery>),
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<RemoteAccessInfo>>),
        errors: &[400, 403, 404],
    },
    Operation {
        method: GET,
        path: paths::REMOTE_ACCESS_ONE,
        operation_id: "getRemoteAccess",
        summary: "One remote access configuration",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<RemoteAccessInfo>),
        errors: &[404],
    },
    Operation {
        method: PATCH,
        path: paths::REMOTE_ACCESS_ONE,
        operation_id: "extendRemoteAccess",
        summary: "Set a configuration's expiration to now + `ttl_secs`",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<UpdateRemoteAccessRequest>),
        status: 200,
        response: Content::Json(schema::<RemoteAccessInfo>),
        errors: &[400, 403, 404, 409, 413],
    },
    Operation {
        method: DELETE,
        path: paths::REMOTE_ACCESS_ONE,
        operation_id: "deleteRemoteAccess",
        summary: "Ask for teardown (`desired_state` becomes DELETED); idempotent",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<RemoteAccessInfo>),
        errors: &[403, 404],
    },
    Operation {
        method: POST,
        path: paths::SESSION_TOKENS,
        operation_id: "createSessionToken",
        summary: "Issue a session token: streams to one node without logging in",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateSessionTokenRequest>),
        status: 201,
        response: Content::Json(schema::<CreatedSessionToken>),
        errors: &[400, 403, 404, 409, 413],
    },
    Operation {
        method: GET,
        path: paths::SESSION_TOKENS,
        operation_id: "listSessionTokens",
        summary: "List the session tokens of the nodes the caller may read",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<SessionTokenInfo>>),
        errors: &[403],
    },
    Operation {
        method: DELETE,
        path: paths::SESSION_TOKEN,
        operation_id: "revokeSessionToken",
        summary: "Revoke a session token; streams opened with it end at once",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<SessionTokenInfo>),
        errors: &[403, 404],
    },
    Operation {
        method: POST,
        path: paths::API_TOKENS,
        operation_id: "createApiToken",
        summary: "Issue an API token that acts as the caller, for automation",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<CreateApiTokenRequest>),
        status: 201,
        response: Content::Json(schema::<CreatedApiToken>),
        errors: &[400, 403, 413],
    },
    Operation {
        method: GET,
        path: paths::API_TOKENS,
        operation_id: "listApiTokens",
        summary: "List the caller's API tokens (an admin's: all of the tenant's)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<ApiTokenInfo>>),
        errors: &[],
    },
    Operation {
        method: DELETE,
        path: paths::API_TOKEN,
        operation_id: "revokeApiToken",
        summary: "Revoke an API token",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<ApiTokenInfo>),
        errors: &[404],
    },
    Operation {
        method: GET,
        path: paths::POLICIES,
        operation_id: "listPolicies",
        summary: "The tenant's access policies: tenant, projects, nodes (admins)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<Vec<PolicyInfo>>),
        errors: &[403],
    },
    Operation {
        method: PUT,
        path: paths::POLICY,
        operation_id: "putPolicy",
        summary: "Set (replace) the access policy of a scope: tenant, project:k=v or node:NODE (admins)",
        auth: Auth::Bearer,
        query: Query::None,
        request: Some(schema::<PolicyRules>),
        status: 200,
        response: Content::Json(schema::<PolicyInfo>),
        errors: &[400, 403, 404, 413],
    },
    Operation {
        method: DELETE,
        path: paths::POLICY,
        operation_id: "deletePolicy",
        summary: "Remove the access policy of a scope: its values are inherited again (admins)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 204,
        response: Content::Empty,
        errors: &[400, 403, 404],
    },
    Operation {
        method: GET,
        path: paths::NODE_POLICY,
        operation_id: "getNodePolicy",
        summary: "The policy that applies to a node, and which level decided each value (admins)",
        auth: Auth::Bearer,
        query: Query::None,
        request: None,
        status: 200,
        response: Content::Json(schema::<EffectivePolicy>),
        errors: &[403, 404],
    },
];

/// OpenAPI links: (from operationId, to operationId, path parameter of the target, where
/// its value is in the source's success response). They let clients and stateful
/// testers (schemathesis) follow a created resource to the operations on it.
pub const LINKS: &[(&str, &str, &str, &str)] = &[
    (
        "createJoinToken",
        "revokeJoinToken",
        "id",
        "$response.body#/id",
    ),
    ("createUser", "deleteUser", "user", "$response.body#/id"),
    ("createUser", "setPassword", "user", "$response.body#/name"),
    ("bindRole", "unbindRole", "id", "$response.body#/id"),
    ("getNode", "revokeNode", "node", "$response.body#/id"),
    ("getNode", "getNodePolicy", "node", "$response.body#/id"),
    (
        "putPolicy",
        "deletePolicy",
        "scope",
        "$response.body#/scope",
    ),
    ("listNodes", "getNode", "node", "$response.body#/0/name"),
    ("listNodes", "revokeNode", "node", "$response.body#/0/id"),
    (
        "listJoinTokens",
        "revokeJoinToken",
        "id",
        "$response.body#/0/id",
    ),
    (
        "listRemoteAccess",
        "getRemoteAccess",
        "id",
        "$response.body#/0/resource_id",
    ),
    (
        "listRemoteAccess",
        "extendRemoteAccess",
        "id",
        "$response.body#/0/resource_id",
    ),
    (
        "listRemoteAccess",
        "deleteRemoteAccess",
        "id",
        "$response.body#/0/resource_id",
    ),
    (
        "createRemoteAccess",
        "getRemoteAccess",
        "id",
        "$response.body#/resource_id",
    ),
    (
        "createRemoteAccess",
        "extendRemoteAccess",
        "id",
        "$response.body#/resource_id",
    ),
    (
        "createRemoteAccess",
        "deleteRemoteAccess",
        "id",
        "$response.body#/resource_id",
    ),
    (
        "extendRemoteAccess",
        "deleteRemoteAccess",
        "id",
        "$response.body#/resource_id",
    ),
    (
        "createSessionToken",
        "revokeSessionToken",
        "id",
        "$response.body#/info/id",
    ),
    (
        "createApiToken",
        "revokeApiToken",
        "id",
        "$response.body#/info/id",
    ),
    ("listNodes", "nodePty", "node", "$response.body#/0/name"),
];

/// The names of the `{name}` segments of `path`, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn path_param_description(name: &str) -> &'static str {
    match name {
        "node" => "Node name or id.",
        "user" => "User name or id.",
        "id" => "The resource's id.",
        "scope" => "`tenant`, `project:KEY=VALUE[,KEY=VALUE]` or `node:NODE` (name or id).",
        _ => "",
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request is invalid: the message says what to change.",
        401 => "Missing, expired or refused credentials.",
        403 => "The caller's roles do not allow this.",
        404 => "No such resource in the caller's tenant (or not visible to the caller).",
        409 => "Conflicts with the current state (e.g. the node is offline).",
        413 => "The request body is larger than the limit.",
        426 => "Not a WebSocket handshake: connect with a WebSocket client (`Upgrade: websocket`).",
        429 => "Too many failed attempts: wait and try again.",
        503 => "The server cannot reach its database.",
        _ => "Error.",
    }
}

fn success_description(status: u16) -> &'static str {
    match status {
        101 => "Switching to the WebSocket protocol.",
        201 => "Created.",
        204 => "Done; no body.",
        _ => "OK.",
    }
}

/// `schema` as JSON, after the generator's OpenAPI 3.0 visitors (which turn `true`
/// schemas into `{}` and move `$ref` siblings into `allOf`): the generator applies them
/// only to root schemas, and the document has none.
fn finish(g: &mut SchemaGenerator, mut schema: Schema) -> Value {
    for visitor in g.visitors_mut() {
        visitor.visit_schema(&mut schema);
    }
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// Schema JSON with what a query parameter cannot carry removed (`null`).
fn query_param_schema(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("nullable");
        obj.remove("description");
        if obj.get("default") == Some(&Value::Null) {
            obj.remove("default");
        }
    }
    schema
}

fn parameters(op: &Operation, g: &mut SchemaGenerator) -> Vec<Value> {
    let mut out: Vec<Value> = path_params(op.path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": path_param_description(name),
                "schema": { "type": "string", "minLength": 1 },
            })
        })
        .collect();
    match op.query {
        Query::None => {}
        Query::Strings(names) => {
            out.extend(names.iter().map(|(name, description)| {
                json!({
                    "name": name,
                    "in": "query",
                    "required": false,
                    "description": description,
                    "schema": { "type": "string" },
                })
            }));
        }
        Query::Struct(f) => {
            let schema = f(g);
            let schema = finish(g, schema);
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let mut p = json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": query_param_schema(prop.clone()),
                    });
                    if let Some(d) = prop.get("description") {
                        p["description"] = d.clone();
                    }
                    out.push(p);
                }
            }
        }
    }
    out
}

fn error_response() -> Value {
    json!({
        "description": "",
        "content": {
            "application/json": {
                "schema": { "$ref": "#/components/schemas/ApiError" }
            }
        }
    })
}

fn json_schema(g: &mut SchemaGenerator, f: SchemaFn) -> Value {
    let schema = f(g);
    finish(g, schema)
}

fn operation(op: &Operation, g: &mut SchemaGenerator) -> Value {
    let mut responses = Map::new();
    let success = match op.response {
        Content::Empty => json!({ "description": success_description(op.status) }),
        Content::Json(f) => json!({
            "description": success_description(op.status),
            "content": { "application/json": { "schema": json_schema(g, f) } },
        }),
        Content::JsonLines(f) => json!({
            "description": "JSON Lines: one value of the schema per line.",
            "content": { "application/x-ndjson": { "schema": json_schema(g, f) } },
        }),
        Content::Text => json!({
            "description": success_description(op.status),
            "content": { "text/plain": { "schema": { "type": "string" } } },
        }),
        Content::Asciicast => json!({
            "description": "An asciicast v2 file: a JSON header line, then one JSON event per line.",
            "content": { "application/x-asciicast": { "schema": { "type": "string" } } },
        }),
        Content::WebSocket => json!({
            "description": "Switching to the WebSocket protocol. Binary messages carry terminal \
                bytes both ways; text messages carry JSON: client to server \
                {\"type\":\"resize\",\"cols\":C,\"rows\":R}, server to client \
                {\"type\":\"exit\",\"code\":N} or {\"type\":\"error\",\"message\":...}, \
                then a close. Browsers, which cannot set headers, authenticate by offering \
                the subprotocols `adit.pty.v1` and `bearer.<token>`. A request with an \
                `Origin` header must come from the server's own origin or an allowed one \
                (else 403).",
        }),
    };
    let links: Map<String, Value> = LINKS
        .iter()
        .filter(|(from, ..)| *from == op.operation_id)
        .map(|(_, to, param, expr)| {
            (
                (*to).to_string(),
                json!({ "operationId": to, "parameters": { *param: expr } }),
            )
        })
        .collect();
    let mut success = success;
    if !links.is_empty() {
        success["links"] = Value::Object(links);
    }
    responses.insert(op.status.to_string(), success);
    let mut errors: Vec<u16> = op.errors.to_vec();
    if op.auth != Auth::Public && !errors.contains(&401) {
        errors.push(401);
    }
    errors.sort_unstable();
    for status in errors {
        let mut r = error_response();
        r["description"] = json!(error_description(status));
        responses.insert(status.to_string(), r);
    }

    let mut out = json!({
        "operationId": op.operation_id,
        "summary": op.summary,
        "responses": responses,
    });
    let params = parameters(op, g);
    if !params.is_empty() {
        out["parameters"] = Value::Array(params);
    }
    if let Some(f) = op.request {
        out["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": json_schema(g, f) } },
        });
    }
    match op.auth {
        // The document-wide default.
        Auth::Bearer => {}
        Auth::Public => out["security"] = json!([]),
        Auth::ClientCert => {
            out["security"] = json!([]);
            out["description"] = json!(
                "Authenticated by the node's current client certificate: connect with \
                 mutual TLS using the certificate from enrolment or the last renewal."
            );
        }
    }
    out
}

/// The OpenAPI document of the API: every operation of [`OPERATIONS`], with the schemas
/// of their bodies under `components.schemas`.
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    // Always present: every error response refers to it.
    g.subschema_for::<ApiError>();

    let mut paths_obj = Map::new();
    for op in OPERATIONS {
        let item = paths_obj
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method] = operation(op, &mut g);
    }

    let schemas: Map<String, Value> = g
        .take_definitions()
        .into_iter()
        .map(|(name, s)| (name, finish(&mut g, s)))
        .collect();

    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Adit API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane of Adit: secure remote access to edge devices. \
                Bodies are JSON (unknown fields are refused); times are unix milliseconds \
                unless a field says otherwise; every error is an ApiError. Log in with \
                POST /v1/login and send the access token as `Authorization: Bearer`.",
        },
        "security": [{ BEARER: [] }],
        "paths": paths_obj,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token from POST /v1/login.",
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_ids_are_unique() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {r}"
            );
        }
        for (from, to, param, _) in LINKS {
            let find = |id: &str| OPERATIONS.iter().find(|o| o.operation_id == id);
            assert!(find(from).is_some(), "link from unknown {from}");
            let target = find(to).unwrap_or_else(|| panic!("link to unknown {to}"));
            assert!(
                path_params(target.path).contains(param),
                "{to} has no {param}"
            );
        }
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.operation_id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "duplicate operationId");
    }

    #[test]
    fn no_boolean_schemas_and_nullable_options() {
        // OpenAPI 3.0 has no `true`/`false` schemas and no `type: null`.
        let text = document().to_string();
        assert!(!text.contains("\"type\":\"null\""), "{text}");
        let doc = document();
        let node = &doc["components"]["schemas"]["NodeInfo"]["properties"];
        assert_eq!(node["last_seen"]["nullable"], json!(true));
        assert_eq!(node["last_seen"]["format"], json!("int64"));
        assert_eq!(node["status"]["enum"], json!(["online", "offline"]));
        let ra = &doc["components"]["schemas"]["RemoteAccessInfo"]["properties"];
        assert_eq!(ra["current_state"]["enum"], json!(remote_access_state::ALL));
        assert_eq!(ra["local_port"]["nullable"], json!(true));
        // Any JSON value becomes the empty schema.
        let ev = &doc["components"]["schemas"]["AuditEventInfo"]["properties"];
        assert_eq!(ev["detail"], json!({}));
    }

    #[test]
    fn parameters_follow_the_paths_and_query_types() {
        let doc = document();
        let node = &doc["paths"][paths::NODE]["get"]["parameters"];
        assert_eq!(node[0]["name"], "node");
        assert_eq!(node[0]["in"], "path");
        let audit = doc["paths"][paths::AUDIT]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = audit.iter().filter_map(|p| p["name"].as_str()).collect();
        for want in [
            "since",
            "until",
            "node",
            "actor",
            "action",
            "after_seq",
            "limit",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(audit
            .iter()
            .all(|p| p["required"] == json!(false) && p["schema"].get("nullable").is_none()));
        let login = &doc["paths"][paths::LOGIN]["post"];
        assert_eq!(login["security"], json!([]));
        assert!(login["responses"].get("429").is_some());
        assert!(doc["paths"][paths::WHOAMI]["get"].get("security").is_none());
        assert!(doc["paths"][paths::WHOAMI]["get"]["responses"]
            .get("401")
            .is_some());
    }
}
