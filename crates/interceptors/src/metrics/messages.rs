//! Counting the messages of a call (`grpc_*_msg_received_total`,
//! `grpc_*_msg_sent_total`): a request body wrapper counts the messages the
//! caller streams in; the response side is counted by the body observer of
//! [`crate::observe`]. A message counts once its last byte has passed, so a
//! unary call counts one each way and a stream one per message.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use crate::framing::Frames;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `request` with every message of its body counted into `counter`.
pub fn count_request_messages<B>(
    request: http::Request<B>,
    counter: Counter,
) -> http::Request<tonic::body::Body>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    request.map(|inner| {
        tonic::body::Body::new(CountedBody {
            inner,
            frames: Frames::new(),
            counter,
        })
    })
}

pin_project_lite::pin_project! {
    /// A body whose whole messages are counted as they pass.
    struct CountedBody<B> {
        #[pin]
        inner: B,
        frames: Frames,
        counter: Counter,
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let ended = this.frames.count(data);
            if ended > 0 {
                this.counter.inc_by(ended);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
