//! The suite of order tests: `agora_testkit`'s [`TestSuite`] (all four
//! services), plus what only these tests put around it: a provider that
//! fails charges, and a proxy in front of inventory that fails
//! CommitReservation on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_payment::TestGateway;
use agora_proto::inventory::v1 as inv;
use agora_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use agora_proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
pub use agora_testkit::providers::ALWAYS;
use agora_testkit::providers::FlakyProvider;
use agora_testkit::suite::InventoryFront;
pub use agora_testkit::suite::{SLOW_CARD_DELAY, SuiteOptions, TestSuite as Suite};
use agora_testkit::{TestServer, channel};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A provider whose next `n` charges fail transiently ([`ALWAYS`]: every
/// one); refunds go through.
pub fn failing_charges(n: u32) -> Arc<FlakyProvider> {
    let gateway = Arc::new(TestGateway::new(SLOW_CARD_DELAY));
    Arc::new(FlakyProvider::new(gateway).failing_charges(n))
}

/// A [`CommitFailingProxy`] in front of inventory, failing commits while
/// `fail_commits` is set.
pub fn commit_proxy(fail_commits: Arc<AtomicBool>) -> InventoryFront {
    Box::new(move |inventory| {
        Box::pin(async move {
            let proxy = CommitFailingProxy {
                upstream: InventoryServiceClient::new(channel(inventory)),
                fail_commits,
            };
            TestServer::spawn(|listener, stop| async move {
                tonic::transport::Server::builder()
                    .add_service(InventoryServiceServer::new(proxy))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop,
                    )
                    .await?;
                Ok(())
            })
            .await
        })
    })
}

/// Forwards InventoryService calls to the real service, failing
/// CommitReservation with FAILED_PRECONDITION while `fail_commits` is set:
/// a commit failure after the charge, over real gRPC.
#[derive(Clone)]
pub struct CommitFailingProxy {
    upstream: InventoryServiceClient<Channel>,
    fail_commits: Arc<AtomicBool>,
}

/// The same call for the upstream, with the caller's credentials.
fn forward<T>(request: Request<T>) -> Request<T> {
    let authorization = request.metadata().get("authorization").cloned();
    let mut forwarded = Request::new(request.into_inner());
    if let Some(value) = authorization {
        forwarded.metadata_mut().insert("authorization", value);
    }
    forwarded
}

#[tonic::async_trait]
impl InventoryService for CommitFailingProxy {
    async fn create_product(
        &self,
        r: Request<inv::CreateProductRequest>,
    ) -> Result<Response<inv::CreateProductResponse>, Status> {
        self.upstream.clone().create_product(forward(r)).await
    }
    async fn get_product(
        &self,
        r: Request<inv::GetProductRequest>,
    ) -> Result<Response<inv::GetProductResponse>, Status> {
        self.upstream.clone().get_product(forward(r)).await
    }
    async fn list_products(
        &self,
        r: Request<inv::ListProductsRequest>,
    ) -> Result<Response<inv::ListProductsResponse>, Status> {
        self.upstream.clone().list_products(forward(r)).await
    }
    async fn adjust_stock(
        &self,
        r: Request<inv::AdjustStockRequest>,
    ) -> Result<Response<inv::AdjustStockResponse>, Status> {
        self.upstream.clone().adjust_stock(forward(r)).await
    }
    async fn reserve_stock(
        &self,
        r: Request<inv::ReserveStockRequest>,
    ) -> Result<Response<inv::ReserveStockResponse>, Status> {
        self.upstream.clone().reserve_stock(forward(r)).await
    }
    async fn commit_reservation(
        &self,
        r: Request<inv::CommitReservationRequest>,
    ) -> Result<Response<inv::CommitReservationResponse>, Status> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(
                "the reservation cannot be committed (test proxy)",
            ));
        }
        self.upstream.clone().commit_reservation(forward(r)).await
    }
    async fn release_reservation(
        &self,
        r: Request<inv::ReleaseReservationRequest>,
    ) -> Result<Response<inv::ReleaseReservationResponse>, Status> {
        self.upstream.clone().release_reservation(forward(r)).await
    }
    async fn get_reservation(
        &self,
        r: Request<inv::GetReservationRequest>,
    ) -> Result<Response<inv::GetReservationResponse>, Status> {
        self.upstream.clone().get_reservation(forward(r)).await
    }
}
