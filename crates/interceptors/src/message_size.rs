//! The request size limit, answered the way gRPC defines it.
//!
//! A message larger than the server accepts is RESOURCE_EXHAUSTED in the gRPC
//! spec (and in grpc-go and grpc-java); tonic's own decoder limit answers
//! OUT_OF_RANGE instead. This layer reads the 5-byte prefix of every gRPC
//! message as the request body streams in (flag, then length, big-endian) and
//! fails the body with RESOURCE_EXHAUSTED as soon as a prefix announces more
//! than the limit: before the message is buffered, let alone decoded. tonic
//! hands a `Status` that a body fails with to the caller unchanged. Each
//! service still sets tonic's limit to the same size, as a backstop.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tower::{Layer, Service};

use crate::framing::Frames;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Refuses request messages over `max_bytes` with RESOURCE_EXHAUSTED.
#[derive(Clone, Copy, Debug)]
pub struct MessageSizeLayer {
    max_bytes: usize,
}

impl MessageSizeLayer {
    /// A limit of `max_bytes` per request message (its encoded size).
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<S> Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageSize {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// See [`MessageSizeLayer`].
#[derive(Clone, Debug)]
pub struct MessageSize<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, B> Service<http::Request<B>> for MessageSize<S>
where
    S: Service<http::Request<tonic::body::Body>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let max_bytes = self.max_bytes;
        self.inner.call(request.map(|body| {
            tonic::body::Body::new(SizeCheckedBody {
                inner: body,
                prefixes: PrefixScanner::new(max_bytes),
                failed: false,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once a message prefix exceeds the limit.
    struct SizeCheckedBody<B> {
        #[pin]
        inner: B,
        prefixes: PrefixScanner,
        failed: bool,
    }
}

impl<B> Body for SizeCheckedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = this.prefixes.scan(data)
        {
            *this.failed = true;
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The size check over [`Frames`]: refuses the first prefix announcing more
/// than `max_bytes`.
#[derive(Debug)]
struct PrefixScanner {
    max_bytes: usize,
    frames: Frames,
}

impl PrefixScanner {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            frames: Frames::new(),
        }
    }

    /// Consumes `data`; an error names the first message over the limit.
    fn scan(&mut self, data: &[u8]) -> Result<(), Status> {
        let max_bytes = self.max_bytes;
        self.frames.scan(
            data,
            |length| {
                if u64::from(length) > max_bytes as u64 {
                    return Err(Status::resource_exhausted(format!(
                        "request message too large: {length} bytes, more than the {max_bytes} this server accepts"
                    )));
                }
                Ok(())
            },
            || {},
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::tests::message;

    #[test]
    fn messages_within_the_limit_pass_however_they_are_split() {
        let stream: Vec<u8> = [message(10), message(0), message(100)].concat();
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut scanner = PrefixScanner::new(100);
            for piece in stream.chunks(chunk) {
                scanner.scan(piece).unwrap();
            }
            assert!(scanner.frames.at_boundary());
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_resource_exhausted_even_split_mid_prefix() {
        let stream: Vec<u8> = [message(10), message(101)].concat();
        for chunk in [1, 2, 3, 13, 1000] {
            let mut scanner = PrefixScanner::new(100);
            let error = stream
                .chunks(chunk)
                .find_map(|piece| scanner.scan(piece).err())
                .expect("refused");
            assert_eq!(error.code(), tonic::Code::ResourceExhausted);
            assert!(error.message().contains("101 bytes"), "{}", error.message());
        }
    }
}
