//! DescribeCluster (key 60): the cluster id and its one broker.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, RequestHeader,
};

use super::str_bytes;
use crate::cores::CoreContext;

/// Answers DescribeCluster.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = ctx.metadata();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(ctx.config.node_id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(ctx.config.node_id))
                .with_host(str_bytes(&ctx.config.advertised_host))
                .with_port(i32::from(ctx.config.advertised_port)),
        ])
}
