//! The gRPC face of the inventory context: parses requests into domain types,
//! checks who may do what, and converts results back to protobuf.

use std::time::Duration;

use agora_interceptors::api::errors::FieldViolations;
use agora_interceptors::api::pagination::PageRequest;
use agora_interceptors::api::time::{parse_duration, timestamp_from_micros};
use agora_interceptors::auth::{Access, Principal, Role, ServicePolicy};
use agora_proto::Money;
use agora_proto::inventory::v1 as pb;
use pb::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status};

use crate::domain::{
    Adjustment, AdjustmentReason, Currency, Description, NewProduct, OrderId, Price, Product,
    ProductName, Quantity, RequestId, RequestedLines, Reservation, ReservationState, Sku,
    StockDelta, Ttl,
};
use crate::error::InventoryError;
use crate::store::{Catalog, Reservations};

/// Who may call which method of `agora.inventory.v1.InventoryService`.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.inventory.v1.InventoryService",
    methods: &[
        ("CreateProduct", Access::Roles(&[Role::Admin])),
        // The catalogue is for browsing before signing in.
        ("GetProduct", Access::Public),
        ("ListProducts", Access::Public),
        ("AdjustStock", Access::Roles(&[Role::Admin])),
        // Reservations are the order saga's business, never a shopper's.
        ("ReserveStock", Access::Roles(&[Role::Service])),
        ("CommitReservation", Access::Roles(&[Role::Service])),
        ("ReleaseReservation", Access::Roles(&[Role::Service])),
        (
            "GetReservation",
            Access::Roles(&[Role::Service, Role::Admin]),
        ),
    ],
};

/// The generated tonic server around [`InventoryApi`], as `lib.rs` hands it to
/// the host (generated types stay in this module).
pub type Server = pb::inventory_service_server::InventoryServiceServer<InventoryApi>;

/// The InventoryService implementation.
#[derive(Clone, Debug)]
pub struct InventoryApi {
    catalog: Catalog,
    reservations: Reservations,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl InventoryApi {
    /// The service over its stores; reservations without a ttl are held for
    /// `default_ttl`, and none for longer than `max_ttl`.
    pub fn new(
        catalog: Catalog,
        reservations: Reservations,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Self {
        Self {
            catalog,
            reservations,
            default_ttl,
            max_ttl,
        }
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let Some(product) = request.into_inner().product else {
            return Err(FieldViolations::single("product", "is required"));
        };
        let new = parse_new_product(&product)?;
        let created = self.catalog.create(new).await?;
        tracing::info!(sku = %created.sku, "product created");
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product_to_proto(&created)),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let sku = parse_sku("sku", &request.get_ref().sku)?;
        let product = self
            .catalog
            .get(&sku)
            .await?
            .ok_or_else(|| InventoryError::ProductNotFound(vec![sku]))?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_to_proto(&product)),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            "agora.inventory.v1.InventoryService/ListProducts",
            request.page_size,
            &request.page_token,
            "",
        )?;
        let products = self.catalog.list(page.after(), page.fetch_limit()).await?;
        let (products, next_page_token) =
            page.split(products, |product| product.sku.as_str().to_owned());
        Ok(Response::new(pb::ListProductsResponse {
            products: products.iter().map(product_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let actor = Principal::of(&request)?.subject;
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let sku = violations.check("sku", Sku::parse(&request.sku));
        let delta = violations.check("delta", StockDelta::parse(request.delta));
        let reason = violations.check("reason", AdjustmentReason::parse(&request.reason));
        let request_id = violations.check("request_id", RequestId::parse(&request.request_id));
        let (sku, delta, reason, request_id) =
            violations.finish((sku, delta, reason, request_id))?;
        let adjustment = Adjustment {
            sku,
            delta,
            reason,
            request_id,
        };
        let product = self.catalog.adjust(&adjustment, &actor).await?;
        tracing::info!(
            sku = %product.sku,
            delta = delta.get(),
            // Not `request_id`: log lines carry the call's own (x-request-id).
            adjustment_request_id = %request_id,
            %actor,
            on_hand = product.on_hand,
            "stock adjusted"
        );
        Ok(Response::new(pb::AdjustStockResponse {
            product: Some(product_to_proto(&product)),
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let order_id = violations.check("order_id", OrderId::parse(&request.order_id));
        let lines = parse_lines(&request.lines, &mut violations);
        let requested_ttl = match request.ttl {
            None => Some(None),
            Some(ttl) => violations.check("ttl", parse_duration(&ttl)).map(Some),
        };
        let ttl = requested_ttl.and_then(|ttl| {
            violations.check("ttl", Ttl::resolve(ttl, self.default_ttl, self.max_ttl))
        });
        let (order_id, lines, ttl) = violations.finish((order_id, lines, ttl))?;
        let reservation = self.reservations.reserve(order_id, &lines, ttl).await?;
        tracing::info!(
            %order_id,
            state = reservation.state.as_str(),
            total_minor = reservation.total_minor,
            "stock reserved"
        );
        Ok(Response::new(pb::ReserveStockResponse {
            reservation: Some(reservation_to_proto(&reservation)),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        let reservation = self.reservations.commit(order_id).await?;
        tracing::info!(%order_id, "reservation committed");
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation_to_proto(&reservation)),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        let reservation = self.reservations.release(order_id).await?;
        tracing::info!(%order_id, state = reservation.state.as_str(), "reservation released");
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation: Some(reservation_to_proto(&reservation)),
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        let reservation = self
            .reservations
            .get(order_id)
            .await?
            .ok_or(InventoryError::ReservationNotFound(order_id))?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_to_proto(&reservation)),
        }))
    }
}

// === parsing ===

fn parse_sku(field: &str, value: &str) -> Result<Sku, Status> {
    Sku::parse(value).map_err(|e| FieldViolations::single(field, e.to_string()))
}

fn parse_order_id(value: &str) -> Result<OrderId, Status> {
    OrderId::parse(value).map_err(|e| FieldViolations::single("order_id", e.to_string()))
}

fn parse_new_product(product: &pb::Product) -> Result<NewProduct, Status> {
    let mut violations = FieldViolations::new();
    let sku = violations.check("product.sku", Sku::parse(&product.sku));
    let name = violations.check("product.name", ProductName::parse(&product.name));
    let description = violations.check(
        "product.description",
        Description::parse(&product.description),
    );
    let price = match &product.price {
        None => {
            violations.add("product.price", "is required");
            None
        }
        Some(money) => {
            let currency = violations.check(
                "product.price.currency_code",
                Currency::parse(&money.currency_code),
            );
            let amount = violations.check(
                "product.price.amount_minor",
                Price::parse_amount(money.amount_minor),
            );
            match (currency, amount) {
                (Some(currency), Some(amount)) => {
                    violations.check("product.price", Price::new(amount, currency))
                }
                _ => None,
            }
        }
    };
    let (sku, name, description, price) = violations.finish((sku, name, description, price))?;
    Ok(NewProduct {
        sku,
        name,
        description,
        price,
    })
}

/// The lines of a ReserveStock, or `None` with every problem recorded. Only
/// `sku` and `quantity` are read: `unit_price` is output only, and a price
/// sent by the caller is never used.
fn parse_lines(
    lines: &[pb::ReservationLine],
    violations: &mut FieldViolations,
) -> Option<RequestedLines> {
    let mut parsed = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let sku = violations.check(&format!("lines[{index}].sku"), Sku::parse(&line.sku));
        let quantity = violations.check(
            &format!("lines[{index}].quantity"),
            Quantity::parse(line.quantity),
        );
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            parsed.push((sku, quantity));
        }
    }
    if parsed.len() != lines.len() {
        // Bad lines are reported above; the whole set is checked only when
        // every line parsed, so indexes stay meaningful.
        if lines.len() > RequestedLines::MAX_LINES {
            violations.add("lines", "must have at most 100 lines");
        }
        return None;
    }
    match RequestedLines::new(parsed) {
        Ok(lines) => Some(lines),
        Err((Some(index), error)) => {
            violations.add(format!("lines[{index}].sku"), error.to_string());
            None
        }
        Err((None, error)) => {
            violations.add("lines", error.to_string());
            None
        }
    }
}

// === to protobuf ===

fn money(amount_minor: i64, currency: Currency) -> Money {
    Money {
        currency_code: currency.code().to_owned(),
        amount_minor,
    }
}

fn product_to_proto(product: &Product) -> pb::Product {
    pb::Product {
        sku: product.sku.as_str().to_owned(),
        name: product.name.as_str().to_owned(),
        description: product.description.as_str().to_owned(),
        price: Some(money(
            product.price.amount_minor(),
            product.price.currency(),
        )),
        on_hand: product.on_hand,
        reserved: product.reserved,
        available: product.available(),
        create_time: Some(timestamp_from_micros(product.created_at)),
        update_time: Some(timestamp_from_micros(product.updated_at)),
    }
}

fn reservation_to_proto(reservation: &Reservation) -> pb::Reservation {
    let state = match reservation.state {
        ReservationState::Held => pb::ReservationState::Held,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    };
    pb::Reservation {
        order_id: reservation.order_id.to_string(),
        state: state as i32,
        lines: reservation
            .lines
            .iter()
            .map(|line| pb::ReservationLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: Some(money(line.unit_price_minor, reservation.currency)),
            })
            .collect(),
        total: Some(money(reservation.total_minor, reservation.currency)),
        expire_time: Some(timestamp_from_micros(reservation.expires_at)),
        create_time: Some(timestamp_from_micros(reservation.created_at)),
        update_time: Some(timestamp_from_micros(reservation.updated_at)),
    }
}
