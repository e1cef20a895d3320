//! InitProducerId (key 22) for idempotent producers only.
//!
//! librdkafka with `enable.idempotence`, the Java client (idempotent by default since 3.0) and
//! kafka-python 3.x with `acks=all` ask for a producer id before producing. We hand out ids
//! unique to this broker; batches carrying them are stored as sent. Sequence numbers are not
//! yet checked for duplicates (a retried batch may be stored twice, as without idempotence).
//! Transactions are not supported: a transactional id is refused.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, RequestHeader,
};

use crate::cores::CoreContext;

/// Answers InitProducerId.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // v3+: a producer may ask to bump the epoch of the id it has (after a fatal error).
    let (id, epoch) = if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        match request.producer_epoch.checked_add(1) {
            Some(epoch) if epoch < i16::MAX => (request.producer_id.0, epoch),
            _ => (ctx.next_producer_id(), 0),
        }
    } else {
        (ctx.next_producer_id(), 0)
    };
    InitProducerIdResponse::default()
        .with_error_code(0)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}
