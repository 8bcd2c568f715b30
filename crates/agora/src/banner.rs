//! The banner `cargo run` prints once every service answers SERVING: where
//! each service is, the ready accounts and tokens, and a grpcurl and a curl
//! walkthrough (through the API gateway) whose every line runs as printed
//! (they need grpcurl or curl, jq and uuidgen).

use crate::suite::{Service, Suite};

/// Prints the banner for `suite` to standard output.
pub fn print(suite: &Suite) {
    println!("{}", render(suite));
}

/// The banner's text.
pub fn render(suite: &Suite) -> String {
    let user = suite.addr(Service::User);
    let order = suite.addr(Service::Order);
    let inventory = suite.addr(Service::Inventory);
    let gateway = suite.gateway;
    let mut text = format!(
        "\nAgora is up: all four services SERVING after {:.0?}. Ctrl-C stops them.\n\n",
        suite.startup
    );
    for running in &suite.services {
        let metrics = running
            .metrics
            .map(|m| format!("metrics http://{m}/metrics"))
            .unwrap_or_default();
        text += &format!(
            "  {:<10} {:<16} {:<37} SERVING   {metrics}\n",
            running.service.label(),
            running.addr,
            running.service.grpc_name()
        );
    }
    text += &format!(
        "  {:<10} {:<16} {:<37} HTTP/JSON, gRPC-Web, gRPC; http://{gateway}/openapi.json\n",
        "gateway", gateway, "agora-gateway"
    );
    let kept = suite
        .passwords_file
        .as_ref()
        .map(|file| format!("kept in {}", file.display()))
        .unwrap_or_else(|| "in memory: --ephemeral".to_owned());
    text += &format!(
        r#"
Accounts (passwords {kept}):
  admin     {admin_email:<22} {admin_password}
  customer  {customer_email:<22} {customer_password}

Ready tokens (12 h; more with `cargo run -- token`):
  export ADMIN_TOKEN={admin_token}
  export TOKEN={customer_token}

Walk through it with grpcurl (`cargo run -- demo` does the same for you):
  grpcurl -plaintext {user} list
  grpcurl -plaintext -d '{{"page_size":10}}' {inventory} agora.inventory.v1.InventoryService/ListProducts
  ORDER=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{{"lines":[{{"sku":"SKU-MUG","quantity":2}}],"payment_method_token":"tok_visa","request_id":"'$(uuidgen)'"}}' \
    {order} agora.order.v1.OrderService/PlaceOrder | jq -r .order.orderId)
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"'$ORDER'"}}' {order} agora.order.v1.OrderService/WatchOrder
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"'$ORDER'","reason":"changed my mind"}}' \
    {order} agora.order.v1.OrderService/CancelOrder
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{{"lines":[{{"sku":"SKU-TEE","quantity":1}}],"payment_method_token":"tok_declined","request_id":"'$(uuidgen)'"}}' \
    {order} agora.order.v1.OrderService/PlaceOrder

The same over HTTP/JSON through the gateway (routes from the protos' google.api.http rules):
  curl -s 'http://{gateway}/v1/products?page_size=10'
  curl -s -X POST 'http://{gateway}/v1/users' -d '{{"email":"walker@example.com","displayName":"Walker","password":"correct horse battery"}}'
  ME=$(curl -s -X POST 'http://{gateway}/v1/users:authenticate' \
    -d '{{"email":"walker@example.com","password":"correct horse battery"}}' | jq -r .accessToken)
  ORDER=$(curl -s -X POST 'http://{gateway}/v1/orders' -H "authorization: Bearer $ME" \
    -d '{{"lines":[{{"sku":"SKU-MUG","quantity":2}}],"paymentMethodToken":"tok_visa","requestId":"'$(uuidgen)'"}}' | jq -r .order.orderId)
  curl -sN "http://{gateway}/v1/orders/$ORDER:watch" -H "authorization: Bearer $ME"
  curl -s -X POST "http://{gateway}/v1/orders/$ORDER:cancel" -H "authorization: Bearer $ME" -d '{{"reason":"changed my mind"}}'

As the admin:
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" {user} agora.user.v1.UserService/ListUsers
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" \
    -d '{{"sku":"SKU-MUG","delta":5,"reason":"restock","request_id":"'$(uuidgen)'"}}' \
    {inventory} agora.inventory.v1.InventoryService/AdjustStock
"#,
        admin_email = suite.admin.email,
        admin_password = suite.admin.password,
        customer_email = suite.customer.email,
        customer_password = suite.customer.password,
        admin_token = suite.admin.token,
        customer_token = suite.customer.token,
    );
    text
}
