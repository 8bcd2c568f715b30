//! Seeing how a call ended, for layers that record it (metrics, tracing).
//!
//! A call's gRPC status is in the response headers when the response is
//! trailers-only (most errors), otherwise in the trailers after the body; so
//! the body is wrapped and the outcome reported when the trailers go by, when
//! the body ends without them, or, by the observer's own `Drop`, when the
//! response is dropped before either (the caller went away).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;

use crate::framing::Frames;

/// Something told once how a call ended.
pub trait Outcome: Send + Unpin + 'static {
    /// The call ended with `code`. Called at most once per observed call.
    fn finish(&mut self, code: Code);

    /// Whether it wants [`Outcome::response_messages`]: the response body's
    /// framing is followed only then.
    fn counts_messages(&self) -> bool {
        false
    }

    /// `count` more whole messages of the response body went by.
    fn response_messages(&mut self, count: u64) {
        let _ = count;
    }
}

/// The `grpc-status` header name, parsed once: a lookup by `&str` validates
/// and classifies the name again on every call.
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The code in a `grpc-status` header or trailer, if there is one.
pub fn code_from_headers(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code a gRPC client derives from a non-200 HTTP status (gRPC's
/// http-grpc-status-mapping.md); a 200 without any grpc-status is `Unknown`.
pub fn code_from_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

pin_project_lite::pin_project! {
    /// A response future that reports its call's outcome to `O`: at once when
    /// the status is known from the headers (or the inner service failed),
    /// otherwise through the wrapped body.
    #[derive(Debug)]
    pub struct ObservedFuture<F, O> {
        #[pin]
        inner: F,
        outcome: Option<O>,
        // What an `Err` from the inner service is reported as.
        error_code: Code,
    }
}

impl<F, O> ObservedFuture<F, O> {
    /// Observes `inner`, reporting an `Err` from it as `error_code`.
    pub fn new(inner: F, outcome: O, error_code: Code) -> Self {
        Self {
            inner,
            outcome: Some(outcome),
            error_code,
        }
    }
}

impl<F, E, O> Future for ObservedFuture<F, O>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
    O: Outcome,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut outcome = this
            .outcome
            .take()
            .expect("ObservedFuture polled after completion");
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                outcome.finish(*this.error_code);
                return Poll::Ready(Err(error));
            }
        };
        // Trailers-only: the status is already here and the body is empty.
        if let Some(code) = code_from_headers(response.headers()) {
            outcome.finish(code);
            return Poll::Ready(Ok(response));
        }
        if response.status() != http::StatusCode::OK {
            outcome.finish(code_from_http_status(response.status()));
            return Poll::Ready(Ok(response));
        }
        // `Body::new` drops a body that is already over, so never wrap one.
        if http_body::Body::is_end_stream(response.body()) {
            outcome.finish(Code::Unknown);
            return Poll::Ready(Ok(response));
        }
        let frames = outcome.counts_messages().then(Frames::new);
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(ObservedBody {
                inner,
                outcome: Some(outcome),
                frames,
            })
        })))
    }
}

/// A response body that reports its call when the trailers pass, or when it
/// ends without them (`Unknown`: a gRPC response always ends with a status).
/// Dropped before either, it drops the observer unfinished.
#[derive(Debug)]
struct ObservedBody<O> {
    inner: Body,
    outcome: Option<O>,
    /// The response's framing, when the outcome counts messages.
    frames: Option<Frames>,
}

impl<O: Outcome> ObservedBody<O> {
    fn finish(&mut self, code: Code) {
        if let Some(mut outcome) = self.outcome.take() {
            outcome.finish(code);
        }
    }
}

impl<O: Outcome> http_body::Body for ObservedBody<O> {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(frames), Some(data), Some(outcome)) =
                    (&mut this.frames, frame.data_ref(), &mut this.outcome)
                {
                    let ended = frames.count(data);
                    if ended > 0 {
                        outcome.response_messages(ended);
                    }
                }
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(code_from_headers(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code()),
            Poll::Ready(None) => this.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_from_headers(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_from_headers(&headers), Some(Code::NotFound));
        headers.insert("grpc-status", http::HeaderValue::from_static("junk"));
        assert_eq!(code_from_headers(&headers), Some(Code::Unknown));
    }

    #[test]
    fn http_statuses_map_like_grpc_clients() {
        assert_eq!(
            code_from_http_status(http::StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(
            code_from_http_status(http::StatusCode::NOT_FOUND),
            Code::Unimplemented
        );
        assert_eq!(
            code_from_http_status(http::StatusCode::IM_A_TEAPOT),
            Code::Unknown
        );
    }
}
