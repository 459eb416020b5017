//! The OpenAPI document (`GET /v1/openapi.json`) against the real router: every route
//! the router serves is in the document, and every operation in the document is served.
//!
//! The routes are found by probing: every path constant of `adit_api::paths` (read from
//! the source, so a new constant is seen without editing this test) is requested with
//! every method. A (path, method) the router serves answers with something other than
//! its fallbacks (404 "no such API endpoint", 405), and must then be documented; one it
//! does not serve must not be.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use adit_server::api::router;
use adit_server::state::Settings;
use axum::http::{Method, StatusCode};
use axum::Router;
use common::{request, send, test_state};
use serde_json::{json, Value};

/// The router's answer to a path it has no route for.
const NO_SUCH_ENDPOINT: &str = "no such API endpoint; check the server URL and the CLI version";

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn app() -> Router {
    router(test_state(Settings::default()))
}

/// `(NAME, "/path")` for every `pub const` in `adit_api::paths`, read from the source.
fn path_constants() -> Vec<(String, String)> {
    let src = include_str!("../../api/src/lib.rs");
    let start = src
        .find("pub mod paths {")
        .expect("adit_api has a `paths` module");
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("end of the paths module")];
    let consts: Vec<(String, String)> = body
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(": &str = \"")?;
            let (value, _) = rest.split_once("\";")?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    assert!(
        consts.len() >= 25,
        "parsed only {} path constants; did the paths module change shape? {consts:?}",
        consts.len()
    );
    consts
}

/// Documented methods (uppercase) by path.
fn documented(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .expect("paths object")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// The path with each `{param}` replaced by a value no resource has.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "probe-0".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let app = app();
    let r = send(
        &app,
        request(Method::GET, adit_api::paths::OPENAPI, None, None, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body, adit_api::openapi::document());
    assert_eq!(r.body["openapi"], json!(adit_api::openapi::OPENAPI_VERSION));
    // Served twice, the same bytes (it is built once).
    let again = send(
        &app,
        request(Method::GET, adit_api::paths::OPENAPI, None, None, None),
    )
    .await;
    assert_eq!(again.text, r.text);
}

#[tokio::test]
async fn every_routed_operation_is_documented_and_every_documented_one_is_routed() {
    let app = app();
    let doc = adit_api::openapi::document();
    let documented = documented(&doc);
    let constants = path_constants();

    let mut served_undocumented = Vec::new();
    let mut documented_unserved = Vec::new();
    for (name, path) in &constants {
        let methods = documented.get(path).cloned().unwrap_or_default();
        for method in METHODS {
            let body =
                matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
            let r = send(
                &app,
                request(method.clone(), &concrete(path), None, body, None),
            )
            .await;
            let fallback = (r.status == StatusCode::NOT_FOUND && r.message() == NO_SUCH_ENDPOINT)
                || r.status == StatusCode::METHOD_NOT_ALLOWED;
            let is_documented = methods.contains(method.as_str());
            match (fallback, is_documented) {
                (false, false) => served_undocumented.push(format!(
                    "{method} {path} (paths::{name}) answered {}",
                    r.status
                )),
                (true, true) => documented_unserved.push(format!(
                    "{method} {path} (paths::{name}) answered {} {}",
                    r.status,
                    r.message()
                )),
                _ => {}
            }
        }
    }
    assert!(
        served_undocumented.is_empty(),
        "served but missing from the OpenAPI document (add them to \
         adit_api::openapi::OPERATIONS): {served_undocumented:#?}"
    );
    assert!(
        documented_unserved.is_empty(),
        "in the OpenAPI document but not served: {documented_unserved:#?}"
    );

    // Every documented path is one of the constants (so the probing above covered it).
    let known: BTreeSet<&str> = constants.iter().map(|(_, v)| v.as_str()).collect();
    for path in documented.keys() {
        assert!(
            known.contains(path.as_str()),
            "{path} is documented but is not a constant of adit_api::paths"
        );
    }
    // And nearly all of them are documented: only the two health probes and the
    // metrics are not under /v1, everything else is.
    assert!(documented.len() >= 25, "{documented:?}");
    assert!(documented.contains_key(adit_api::paths::OPENAPI));
}

/// The probing above only sees routes at `paths::*` constants: every route of the
/// router must be declared with one.
#[test]
fn the_router_routes_only_path_constants() {
    let src = include_str!("../src/api/mod.rs");
    let routes: Vec<&str> = src
        .split(".route(")
        .skip(1)
        .map(|rest| rest.trim_start())
        .collect();
    assert!(routes.len() >= 20, "found only {} routes", routes.len());
    for r in routes {
        assert!(
            r.starts_with("paths::") || r.starts_with("&axum_path(paths::"),
            "a route not declared with an adit_api::paths constant: .route({}",
            r.lines().next().unwrap_or_default()
        );
    }
}

#[test]
fn operations_declare_their_path_parameters_and_security() {
    let doc = adit_api::openapi::document();
    let public = [
        adit_api::paths::HEALTHZ,
        adit_api::paths::READYZ,
        adit_api::paths::METRICS,
        adit_api::paths::OPENAPI,
        adit_api::paths::CA,
        adit_api::paths::JWKS,
        adit_api::paths::LOGIN,
        adit_api::paths::ENROLL,
        adit_api::paths::RENEW,
        adit_api::paths::AGENT_DEMAND,
    ];
    for op in adit_api::openapi::OPERATIONS {
        let o = &doc["paths"][op.path][op.method];
        let declared: Vec<&str> = o["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            declared,
            adit_api::openapi::path_params(op.path),
            "{} {}",
            op.method,
            op.path
        );
        let open = o["security"] == json!([]);
        assert_eq!(
            open,
            public.contains(&op.path),
            "{} {}: security",
            op.method,
            op.path
        );
        if !open {
            assert!(o["responses"].get("401").is_some(), "{}", op.operation_id);
        }
        if o.get("requestBody").is_some() {
            assert!(o["responses"].get("400").is_some(), "{}", op.operation_id);
        }
        let statuses: Vec<&String> = o["responses"].as_object().unwrap().keys().collect();
        // The WebSocket terminal succeeds by switching protocols.
        let websocket = op.path == adit_api::paths::NODE_PTY;
        assert!(
            statuses
                .iter()
                .any(|s| s.starts_with('2') || (websocket && *s == "101")),
            "{}: no success response",
            op.operation_id
        );
    }
}

#[tokio::test]
async fn error_bodies_match_the_documented_schema() {
    // The ApiError schema: exactly `code` and `message`, both strings.
    let doc = adit_api::openapi::document();
    let schema = &doc["components"]["schemas"]["ApiError"];
    assert_eq!(schema["required"], json!(["code", "message"]));
    assert_eq!(schema["additionalProperties"], json!(false));

    let app = app();
    let r = send(
        &app,
        request(Method::GET, adit_api::paths::WHOAMI, None, None, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let keys: BTreeSet<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["code", "message"]));
    let documented = &doc["paths"][adit_api::paths::WHOAMI]["get"]["responses"]["401"];
    assert_eq!(
        documented["content"]["application/json"]["schema"]["$ref"],
        json!("#/components/schemas/ApiError")
    );
}
