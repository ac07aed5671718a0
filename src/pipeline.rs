//! Which stages a decoded request goes through: the one entry every receiver, the admin
//! API's test sends and the simulator call.
//!
//! Spans go to the tail sampler ([`crate::tail::accept`]) when the policy has
//! `traces.tail` (and is not in shadow mode); everything else goes through the head
//! path's stages in [`crate::ingest`]: [`admit`], [`reserve`], [`dispatch`]. The tail
//! sampler runs the last two itself once it has decided a trace, so both `tail` and this
//! module depend on `ingest`, and `ingest` on neither.

use crate::core::Core;
use crate::ingest::{Accepted, IngestError, Payload, RequestMeta, admit, dispatch, reserve};

/// Handles one decoded request: [`admit`], [`reserve`], [`dispatch`]; spans go to the
/// tail sampler instead when the policy has `traces.tail` ([`crate::tail::accept`]).
pub async fn handle<P: Payload>(
    core: &Core,
    req: P,
    meta: RequestMeta,
) -> Result<Accepted, IngestError> {
    // With tail sampling, spans wait for their trace's decision in the spool and the
    // buffer; the client is answered once they are on disk.
    let req = match &core.tail {
        Some(tail) if !core.policy().shadow => match req.into_trace_request() {
            Ok(traces) => return crate::tail::accept(core, tail, traces).await,
            Err(req) => req,
        },
        _ => req,
    };
    let Some(admitted) = admit(core, req)? else {
        return Ok(Accepted::default());
    };
    let Some(reserved) = reserve(core, admitted) else {
        return Ok(Accepted::default());
    };
    dispatch(core, reserved, meta).await
}
