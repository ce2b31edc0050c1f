//! Owns the typed bus client every module uses: one rumqttc session to the broker (the
//! embedded one over loopback, or an external one), JSON encoding of the payloads in
//! `topics.rs`, local fan-out of incoming messages to the module subscriptions, and
//! re-subscription after every reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::BusError;
use super::topics::{BusMessage, Qos, filter_matches};

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

/// One raw incoming message.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

impl Incoming {
    pub fn decode<M: BusMessage>(&self) -> Result<M, BusError> {
        serde_json::from_slice(&self.payload).map_err(|e| BusError::Decode {
            topic: self.topic.clone(),
            message: e.to_string(),
        })
    }
}

struct LocalSubscription {
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Incoming>,
}

struct Shared {
    client: AsyncClient,
    subscriptions: Mutex<Vec<LocalSubscription>>,
    connected: watch::Sender<bool>,
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
        let mut mqtt = MqttOptions::new(&opts.client_id, &opts.host, opts.port);
        mqtt.set_keep_alive(opts.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(opts.max_packet_size, opts.max_packet_size)
            .set_credentials(&opts.username, &opts.password);
        if let Some((topic, payload, q, retain)) = &opts.last_will {
            mqtt.set_last_will(LastWill::new(topic, payload.clone(), qos(*q), *retain));
        }
        let (client, eventloop) = AsyncClient::new(mqtt, REQUEST_BUFFER);
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            client,
            subscriptions: Mutex::new(Vec::new()),
            connected,
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(drive(
            eventloop,
            shared.clone(),
            stop.clone(),
            opts.client_id.clone(),
        ));
        (BusClient { shared, stop }, task)
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until the broker has accepted the session, or fails after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), BusError> {
        let mut rx = self.shared.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .map_err(|_| BusError::NotConnected(timeout))?
            .map_err(|_| BusError::Closed)?;
        Ok(())
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
        self.shared
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
        if self.is_connected() {
            self.shared
                .client
                .subscribe(filter, qos(q))
                .await
                .map_err(|_| BusError::Closed)?;
        }
        Ok(rx)
    }

    /// Sends DISCONNECT (so no last will fires) and stops the event loop.
    pub async fn disconnect(&self) {
        if self.is_connected() {
            let _ = self.shared.client.disconnect().await;
        }
        self.stop.cancel();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    stop: CancellationToken,
    client_id: String,
) {
    let mut backoff = Duration::from_millis(100);
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
                shared.connected.send_replace(true);
                let filters: Vec<(String, QoS)> = {
                    let mut subs = shared
                        .subscriptions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    subs.retain(|s| !s.tx.is_closed());
                    subs.iter().map(|s| (s.filter.clone(), s.qos)).collect()
                };
                for (filter, q) in filters {
                    // try_subscribe: awaiting here would deadlock on a full request queue,
                    // since only this loop drains it.
                    if let Err(e) = shared.client.try_subscribe(&filter, q) {
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
                    let _ = tx.send(incoming.clone()).await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = shared.connected.send_replace(false);
                if was_connected {
                    tracing::warn!(client_id, error = %e, "bus connection lost; reconnecting");
                } else {
                    tracing::debug!(client_id, error = %e, "bus connect failed; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    shared.connected.send_replace(false);
}
