//! Owns the typed bus client every module uses: rumqttc sessions to the broker (the
//! embedded one over loopback, or an external one), JSON encoding of the payloads in
//! `crate::contract`, local fan-out of incoming messages to the module subscriptions, and
//! re-subscription after every reconnect.
//!
//! Each client has two sessions: one publishes, one consumes. A module that is slow to
//! drain its incoming messages holds back only its consuming session (back-pressure to
//! the broker); its own publishes never wait behind that, so a flood of input (a user
//! spamming pings, a burst of observations) cannot wedge a module that answers it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::BusError;
use crate::contract::{BusMessage, Qos, filter_matches};

/// Messages a slow subscriber may have waiting before the client stops reading from
/// the broker (back-pressure instead of loss).
const SUBSCRIPTION_BUFFER: usize = 256;
/// Requests queued towards the broker before `publish` waits.
const REQUEST_BUFFER: usize = 256;

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    /// Published by the broker if this session dies without a DISCONNECT.
    pub last_will: Option<(String, Vec<u8>, Qos, bool)>,
    /// Which sessions to open: a client that only publishes (or only consumes) needs
    /// one connection, not two.
    pub sessions: Sessions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    Both,
    PublishOnly,
    ConsumeOnly,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Messages of one contract type, decoded as they are taken. A payload that does not
/// decode comes out as an `Err` naming its topic, so each consumer decides how loudly
/// to drop it (a user's malformed ping is not worth a warning; a malformed observation is).
pub struct Inbox<M> {
    messages: mpsc::Receiver<Incoming>,
    kind: std::marker::PhantomData<fn() -> M>,
}

impl<M: BusMessage> Inbox<M> {
    /// The next message; `None` once the client has stopped. (A poll function rather
    /// than an `async fn`: one state machine less per message type in the binary.)
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<M, BusError>>> + '_ {
        std::future::poll_fn(|cx| self.messages.poll_recv(cx).map(|m| m.map(|m| m.decode())))
    }

    /// The messages already waiting, at most `limit` (waiting for the first), decoded
    /// into `batch`; 0 once the client has stopped.
    pub fn recv_many<'a>(
        &'a mut self,
        batch: &'a mut Vec<Result<M, BusError>>,
        limit: usize,
    ) -> impl Future<Output = usize> + 'a {
        std::future::poll_fn(move |cx| {
            let mut taken = 0;
            while taken < limit {
                match self.messages.poll_recv(cx) {
                    std::task::Poll::Ready(Some(m)) => {
                        batch.push(m.decode());
                        taken += 1;
                    }
                    std::task::Poll::Ready(None) => break,
                    std::task::Poll::Pending if taken == 0 => return std::task::Poll::Pending,
                    std::task::Poll::Pending => break,
                }
            }
            std::task::Poll::Ready(taken)
        })
    }
}

/// One raw incoming message.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

impl Incoming {
    pub fn decode<M: BusMessage>(&self) -> Result<M, BusError> {
        serde_json::from_slice(&self.payload).map_err(|e| self.undecodable(e))
    }

    /// Not generic, so one copy serves every message type.
    #[cold]
    #[inline(never)]
    fn undecodable(&self, e: serde_json::Error) -> BusError {
        BusError::Decode {
            topic: self.topic.clone(),
            message: e.to_string(),
        }
    }
}

struct LocalSubscription {
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Incoming>,
}

/// One MQTT session: its request handle and whether the broker accepted it.
struct Session {
    client: AsyncClient,
    connected: watch::Sender<bool>,
}

struct Shared {
    publisher: Option<Session>,
    consumer: Option<Session>,
    subscriptions: Mutex<Vec<LocalSubscription>>,
    /// SUBSCRIBE requests sent on the consuming session and not yet acknowledged.
    pending_subacks: watch::Sender<usize>,
}

impl Shared {
    fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.publisher.iter().chain(self.consumer.iter())
    }
}

/// A cheap-to-clone handle on one broker session.
#[derive(Clone)]
pub struct BusClient {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

impl BusClient {
    /// Starts the session's event loop; it connects and reconnects by itself until
    /// [`BusClient::disconnect`]. Use [`BusClient::wait_connected`] to wait for the broker.
    pub fn start(opts: ConnectOptions) -> (BusClient, JoinHandle<()>) {
        let options = |client_id: &str, will: bool| {
            let mut mqtt = MqttOptions::new(client_id, &opts.host, opts.port);
            mqtt.set_keep_alive(opts.keep_alive)
                .set_clean_session(true)
                .set_max_packet_size(opts.max_packet_size, opts.max_packet_size)
                .set_credentials(&opts.username, &opts.password);
            if will && let Some((topic, payload, q, retain)) = &opts.last_will {
                mqtt.set_last_will(LastWill::new(topic, payload.clone(), qos(*q), *retain));
            }
            mqtt
        };
        let consumer_id = format!("{}-in", opts.client_id);
        let publishes = opts.sessions != Sessions::ConsumeOnly;
        let consumes = opts.sessions != Sessions::PublishOnly;
        let publisher =
            publishes.then(|| AsyncClient::new(options(&opts.client_id, true), REQUEST_BUFFER));
        let consumer =
            consumes.then(|| AsyncClient::new(options(&consumer_id, false), REQUEST_BUFFER));
        let session = |client: &AsyncClient| Session {
            client: client.clone(),
            connected: watch::channel(false).0,
        };
        let shared = Arc::new(Shared {
            publisher: publisher.as_ref().map(|(c, _)| session(c)),
            consumer: consumer.as_ref().map(|(c, _)| session(c)),
            subscriptions: Mutex::new(Vec::new()),
            pending_subacks: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let mut loops = Vec::new();
        if let Some((_, eventloop)) = publisher {
            loops.push(tokio::spawn(drive(
                eventloop,
                shared.clone(),
                Role::Publisher,
                stop.clone(),
                opts.client_id.clone(),
            )));
        }
        if let Some((_, eventloop)) = consumer {
            loops.push(tokio::spawn(drive(
                eventloop,
                shared.clone(),
                Role::Consumer,
                stop.clone(),
                consumer_id,
            )));
        }
        let task = tokio::spawn(async move {
            for l in loops {
                let _ = l.await;
            }
        });
        (BusClient { shared, stop }, task)
    }

    /// Follows whether the publishing (or only) session is connected.
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.shared
            .publisher
            .as_ref()
            .or(self.shared.consumer.as_ref())
            .map_or_else(|| watch::channel(false).1, |s| s.connected.subscribe())
    }

    /// Publishes without waiting: fails at once when the request queue is full (a peer
    /// that is down must not stall the caller; the mesh retries by itself).
    pub fn try_publish_raw(
        &self,
        topic: &str,
        payload: Vec<u8>,
        q: Qos,
        retain: bool,
    ) -> Result<(), BusError> {
        let publisher = self.shared.publisher.as_ref().ok_or(BusError::Closed)?;
        publisher
            .client
            .try_publish(topic, qos(q), retain, payload)
            .map_err(|_| BusError::Closed)
    }

    pub fn is_connected(&self) -> bool {
        self.shared.sessions().all(|s| *s.connected.borrow())
    }

    /// Waits until the broker has accepted every session, or fails after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), BusError> {
        let mut watchers: Vec<_> = self
            .shared
            .sessions()
            .map(|s| s.connected.subscribe())
            .collect();
        tokio::time::timeout(timeout, async {
            for w in &mut watchers {
                w.wait_for(|c| *c).await.map_err(|_| BusError::Closed)?;
            }
            Ok::<(), BusError>(())
        })
        .await
        .map_err(|_| BusError::NotConnected(timeout))?
    }

    /// Publishes `message` as JSON on `topic` with the message type's delivery.
    pub async fn publish<M: BusMessage>(&self, topic: &str, message: &M) -> Result<(), BusError> {
        let payload = serde_json::to_vec(message).map_err(|e| BusError::Encode(e.to_string()))?;
        self.publish_raw(topic, payload, M::DELIVERY.qos, M::DELIVERY.retain)
            .await
    }

    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Vec<u8>,
        q: Qos,
        retain: bool,
    ) -> Result<(), BusError> {
        let publisher = self.shared.publisher.as_ref().ok_or(BusError::Closed)?;
        publisher
            .client
            .publish(topic, qos(q), retain, payload)
            .await
            .map_err(|_| BusError::Closed)
    }

    /// Subscribes to `filter`; messages arrive on the returned channel, also after
    /// reconnects. Dropping the receiver ends the local subscription.
    pub async fn subscribe(
        &self,
        filter: &str,
        q: Qos,
    ) -> Result<mpsc::Receiver<Incoming>, BusError> {
        let consumer = self.shared.consumer.as_ref().ok_or(BusError::Closed)?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(LocalSubscription {
                filter: filter.to_owned(),
                qos: qos(q),
                tx,
            });
        // When not yet connected, the ConnAck handler subscribes everything listed.
        if *consumer.connected.borrow() {
            self.shared.pending_subacks.send_modify(|n| *n += 1);
            if consumer.client.subscribe(filter, qos(q)).await.is_err() {
                self.shared
                    .pending_subacks
                    .send_modify(|n| *n = n.saturating_sub(1));
                return Err(BusError::Closed);
            }
        }
        Ok(rx)
    }

    /// Subscribes to every topic message `M` travels on, at its delivery's QoS; the
    /// inbox hands out decoded messages. Consumers that route by topic (the mesh) use
    /// [`Self::subscribe`] and decode themselves.
    pub async fn subscribe_to<M: BusMessage>(&self) -> Result<Inbox<M>, BusError> {
        let messages = self.subscribe(M::FILTER, M::DELIVERY.qos).await?;
        Ok(Inbox {
            messages,
            kind: std::marker::PhantomData,
        })
    }

    /// Waits until the consuming session is connected and the broker has acknowledged
    /// every subscription so far, so messages published from now on reach this client.
    /// False after `timeout` (an external broker that is down): the subscriptions still
    /// take effect once it connects.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let Some(consumer) = self.shared.consumer.as_ref() else {
            return true;
        };
        let mut connected = consumer.connected.subscribe();
        let mut pending = self.shared.pending_subacks.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if *connected.borrow_and_update() && *pending.borrow_and_update() == 0 {
                    return;
                }
                tokio::select! {
                    r = connected.changed() => if r.is_err() { return },
                    r = pending.changed() => if r.is_err() { return },
                }
            }
        })
        .await
        .is_ok()
    }

    /// A task that disconnects this client once `shutdown` fires and waits for its
    /// session to end: for a client that only publishes (a loop of its own does this at
    /// its end instead).
    pub fn close_on_shutdown(
        self,
        session: JoinHandle<()>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            shutdown.cancelled().await;
            self.disconnect().await;
            let _ = session.await;
        })
    }

    /// Sends DISCONNECT (so no last will fires) and stops the event loops.
    pub async fn disconnect(&self) {
        for session in self.shared.sessions() {
            // Never wait for room in the request queue: its loop may be the one stuck
            // (a full queue ends the session without a DISCONNECT, as a crash would).
            if *session.connected.borrow() {
                let _ = session.client.try_disconnect();
            }
        }
        self.stop.cancel();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Consumer,
}

async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    role: Role,
    stop: CancellationToken,
    client_id: String,
) {
    let session = match role {
        Role::Publisher => shared.publisher.as_ref(),
        Role::Consumer => shared.consumer.as_ref(),
    }
    .expect("a loop runs only for a session that exists");
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_secs(5);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            // Give the DISCONNECT a moment to leave, then stop.
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                            break;
                        }
                    }
                }).await;
                break;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                tracing::debug!(client_id, code = ?ack.code, "bus session connected");
                // Mark connected before taking the list: a concurrent `subscribe` then
                // either lands in the list or sees `connected` and subscribes itself.
                session.connected.send_replace(true);
                if role == Role::Publisher {
                    continue;
                }
                let filters: Vec<(String, QoS)> = {
                    let mut subs = shared
                        .subscriptions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    subs.retain(|s| !s.tx.is_closed());
                    subs.iter().map(|s| (s.filter.clone(), s.qos)).collect()
                };
                // A new session: earlier requests died with the old one.
                shared.pending_subacks.send_replace(filters.len());
                for (filter, q) in filters {
                    // try_subscribe: awaiting here would deadlock on a full request queue,
                    // since only this loop drains it.
                    if let Err(e) = session.client.try_subscribe(&filter, q) {
                        shared
                            .pending_subacks
                            .send_modify(|n| *n = n.saturating_sub(1));
                        tracing::warn!(client_id, filter, error = %e, "bus resubscribe failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let incoming = Incoming {
                    topic: p.topic,
                    payload: p.payload,
                    retain: p.retain,
                };
                let targets: Vec<mpsc::Sender<Incoming>> = shared
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|s| filter_matches(&s.filter, &incoming.topic))
                    .map(|s| s.tx.clone())
                    .collect();
                for tx in targets {
                    // Waiting here is deliberate back-pressure: the broker queues for us.
                    // But a module that stopped reading at shutdown still holds its
                    // receiver, so the wait must end when the client stops.
                    tokio::select! {
                        _ = tx.send(incoming.clone()) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) if role == Role::Consumer => {
                shared
                    .pending_subacks
                    .send_modify(|n| *n = n.saturating_sub(1));
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = session.connected.send_replace(false);
                if was_connected {
                    tracing::warn!(client_id, error = %e, "bus connection lost; reconnecting");
                } else {
                    tracing::debug!(client_id, error = %e, "bus connect failed; retrying");
                }
                // Jitter (50–100 %) so sessions that lost the same broker do not return
                // in lockstep.
                let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    session.connected.send_replace(false);
}
