//! The OpenAPI description, generated from the handlers and their types
//! (utoipa). `openapi.json` at the crate's root is this document, committed;
//! a test fails when they differ (`ORGO_BLESS=1` rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{automation, builds, computers, desktop, docs, egress, live, templates};

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orgo",
        description = "Publish, build and launch orgo templates, and drive computers, over HTTP. \
            Errors are `{\"error\": {\"code\", \"message\", \"details\"}}` with stable codes. \
            Authenticate with `Authorization: Bearer <key>` (`orgo keys create`).",
    ),
    paths(
        templates::publish, templates::list, templates::read, templates::delete,
        builds::start, builds::status, builds::cancel, builds::events,
        computers::launch, computers::list, computers::read, computers::stop,
        computers::exec, computers::write_file, computers::read_file,
        automation::logs, automation::events, automation::webhook, automation::metrics,
        automation::services,
        egress::learned,
        live::suspend, live::resume, live::checkpoint, live::fork,
        desktop::screenshot, desktop::cursor, desktop::act,
        docs::template_schema, docs::openapi,
    ),
    components(schemas(crate::builds::Frame)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as committed: pretty JSON and a newline.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
