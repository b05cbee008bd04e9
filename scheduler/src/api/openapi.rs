//! The API's OpenAPI 3.1 description, generated from the handlers' own types and
//! annotations, served at `/v1/openapi.json`.

use std::sync::LazyLock;

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskfleet scheduler API",
        description = "Submit, list, inspect, cancel and retry workflows; read attempts and their output; list the fleet. \
                       Errors answer with an ErrorBody.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::submit,
        super::listing::list,
        super::status,
        super::listing::attempts,
        super::cancel,
        super::retry::retry,
        super::events::fleet,
        super::events::workflow,
        super::workers,
        super::healthz,
        super::readyz,
        super::metrics,
        spec,
    ),
    modifiers(&BearerTokens),
    security(("bearer" = [])),
    tags(
        (name = "workflows", description = "Workflows, their tasks and attempts"),
        (name = "events", description = "Live server-sent events of committed changes"),
        (name = "fleet", description = "The workers"),
        (name = "health", description = "Probes"),
        (name = "meta", description = "This description"),
    )
)]
pub struct ApiDoc;

/// The bearer tokens of a scheduler with a tokens file (`read` for GET, `write` for the
/// rest); without one the scheduler serves only on a loopback address and asks for none.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `taskfleet token new`: scope `read` for GET, `write` (which includes read) for the rest",
                    ))
                    .build(),
            ),
        );
        // Every operation that needs a token may answer 401 and 403.
        let error = |description: &str| {
            utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let open = operation.security.as_ref().is_some_and(|requirements| {
                    requirements
                        .iter()
                        .all(|requirement| *requirement == Default::default())
                });
                if open {
                    continue;
                }
                let responses = &mut operation.responses.responses;
                responses.insert("401".into(), error("No valid bearer token (with a tokens file)").into());
                responses.insert("403".into(), error("The token's scope does not allow this").into());
            }
        }
    }
}

/// The OpenAPI description as JSON.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This API's OpenAPI 3.1 description", content_type = "application/json")))]
pub(super) async fn spec() -> Json<serde_json::Value> {
    static SPEC: LazyLock<serde_json::Value> = LazyLock::new(document);
    Json(SPEC.clone())
}

/// The description, with each response link's fields named as OpenAPI names them (utoipa 5
/// writes `operation_id` and `operation_ref`).
pub(super) fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_links(&mut document);
    document
}

fn fix_links(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(serde_json::Value::Object(links)) = object.get_mut("links") {
                for link in links.values_mut() {
                    let Some(link) = link.as_object_mut() else {
                        continue;
                    };
                    for (from, to) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
                        if let Some(field) = link.remove(from) {
                            link.insert(to.to_string(), field);
                        }
                    }
                }
            }
            object.values_mut().for_each(fix_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_description_covers_every_route_and_names_links_as_openapi_does() {
        let document = super::document();
        assert_eq!(document["openapi"], "3.1.0");
        for path in [
            "/v1/workflows",
            "/v1/workflows/{id}",
            "/v1/workflows/{id}/cancel",
            "/v1/workflows/{id}/retry",
            "/v1/workflows/{id}/events",
            "/v1/events",
            "/v1/workflows/{id}/tasks/{task}/attempts",
            "/v1/workers",
            "/v1/openapi.json",
            "/healthz",
            "/readyz",
        ] {
            assert!(document["paths"].get(path).is_some(), "{path} is not described");
        }
        let link = &document["paths"]["/v1/workflows"]["post"]["responses"]["201"]["links"]["status"];
        assert_eq!(link["operationId"], "status", "{link}");
        assert!(link.get("operation_id").is_none(), "{link}");
        assert!(document["components"]["schemas"].get("WorkflowStatus").is_some());
        let stream = &document["paths"]["/v1/events"]["get"]["responses"]["200"]["content"];
        assert!(stream.get("text/event-stream").is_some(), "{stream}");
        assert!(document["components"]["schemas"].get("FleetEvent").is_some());
    }
}
