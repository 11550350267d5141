//! The OpenAPI 3.1 document: its frame here, its paths from the handlers'
//! `#[utoipa::path]` attributes (collected by the router in `api`), and
//! the problem answers every operation may give, added here once rather
//! than on each handler.

use muster_proto::api::Problem;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

/// The document before the routes are added: what the API is and how a
/// caller proves who it is.
pub(crate) fn base() -> OpenApi {
    let bearer = |description: &str| {
        SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).description(Some(description)).build())
    };
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Muster")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The hub's API: queue tasks, watch and steer runs, manage agents, and operate the hub. \
                     Every error is an RFC 9457 problem (application/problem+json) naming the field at fault.",
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "admin_token",
                    bearer(
                        "The admin token (`mst_…`), or a dashboard session cookie signed in with it. \
                         Operator routes take nothing else.",
                    ),
                )
                .security_scheme(
                    "task_token",
                    bearer("A run's own task token (`mtt_…`, MUSTER_TASK_TOKEN), for its task while its lease lasts."),
                )
                .security_scheme("agent_token", bearer("An agent's own token, for its WebSocket."))
                .build(),
        ))
        .build()
}

/// Adds to every operation the problem answers it can give: a bad request,
/// no such thing, a conflict with the current state (for a change), and
/// the hub unable to answer; with a token, also the refusals of it.
pub(crate) fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(Problem::name().into_owned(), Problem::schema());
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (operation, changes) in operations {
            if let Some(op) = operation {
                add_problems(op, path, changes);
            }
        }
    }
}

fn add_problems(op: &mut Operation, path: &str, changes: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut answers = vec![
        ("400", "The request is invalid; `field` names what is wrong"),
        ("404", "No such thing, or no such route"),
        ("500", "The hub failed; its log says why"),
        ("503", "The hub is shutting down or cannot answer now"),
    ];
    if changes {
        answers.push(("409", "The change conflicts with the current state, which `detail` names"));
        answers.push(("413", "The body is larger than the hub takes"));
        answers.push(("507", "The data disk has no room for the change; nothing was written"));
    }
    if secured {
        answers.push(("401", "No token, or a token that is not valid"));
        answers.push(("403", "A valid token that may not use this route"));
        answers.push(("429", "Over a rate limit; Retry-After says when to try again"));
    }
    if path == "/readyz" {
        answers.retain(|(status, _)| *status != "503");
    }
    for (status, description) in answers {
        op.responses.responses.entry(status.to_owned()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name(Problem::name()))).build(),
                )
                .build()
                .into()
        });
    }
}
