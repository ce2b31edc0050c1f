//! Owns one client's connection to the mesh: choosing a node (first, fewest users,
//! lowest round trip), a session per node with heartbeats and failover, requests sent
//! again after a switch, and received messages acknowledged and passed on once.

use super::*;

/// Drives a new session until the broker's CONNACK: true when it accepted the login.
async fn accepted(eventloop: &mut EventLoop, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A bounded set of recently seen keys.
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    fn new(cap: usize) -> Self {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True the first time.
    fn insert(&mut self, key: T) -> bool {
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

pub(super) struct Driver {
    opts: ClientOptions,
    nodes: NodeList,
    events: mpsc::Sender<ClientEvent>,
    current: watch::Sender<Current>,
    online: watch::Sender<Vec<OnlineUser>>,
    /// Requests the node has not answered yet, by `req`: sent again after a failover.
    pending: HashMap<String, (SendRequest, oneshot::Sender<SendResult>, Instant)>,
    seen_ids: Recent<String>,
    seen_seqs: Recent<(String, u64)>,
    client_id: String,
}

/// What one session has learned of its node so far.
struct Live {
    node: Option<String>,
    last_beat: Instant,
    first_directory: bool,
}

/// Publishes a send request on the user's send topic (never waits: the session's own
/// loop drains the queue).
fn publish_request(client: &AsyncClient, me: &str, req: &SendRequest) {
    if let Ok(payload) = serde_json::to_vec(req) {
        let _ = client.try_publish(contract::mesh_send(me), QoS::AtLeastOnce, false, payload);
    }
}

/// Why a connection ended.
enum End {
    Lost(String),
    Switch(String),
    Close,
}

impl Driver {
    pub(super) fn new(
        opts: ClientOptions,
        events: mpsc::Sender<ClientEvent>,
        current: watch::Sender<Current>,
        online: watch::Sender<Vec<OnlineUser>>,
    ) -> Driver {
        Driver {
            nodes: NodeList::load(&opts.nodes, opts.node_file.clone()),
            opts,
            events,
            current,
            online,
            pending: HashMap::new(),
            seen_ids: Recent::new(4096),
            seen_seqs: Recent::new(4096),
            client_id: format!("mm-{:016x}", rand::random::<u64>()),
        }
    }

    fn mqtt_options(&self, addr: &str) -> Option<MqttOptions> {
        let target = crate::config::BrokerUrl::parse_host_port(addr).ok()?;
        let mut o = MqttOptions::new(&self.client_id, target.host, target.port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_credentials(&self.opts.username, &self.opts.token)
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        Some(o)
    }

    async fn connect(&self, addr: &str, timeout: Duration) -> Option<(AsyncClient, EventLoop)> {
        let opts = self.mqtt_options(addr)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        accepted(&mut eventloop, timeout)
            .await
            .then_some((client, eventloop))
    }

    /// Round trip of one MQTT connect (the best of three), as the node choice measures it.
    async fn measure(&self, addr: &str) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        for i in 0..3 {
            let mut opts = self.mqtt_options(addr)?;
            opts.set_client_id(format!("{}-probe{i}", self.client_id));
            let (client, mut eventloop) = AsyncClient::new(opts, 4);
            let start = Instant::now();
            let ok = accepted(&mut eventloop, Duration::from_secs(2)).await;
            let took = start.elapsed();
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
            if !ok {
                return None;
            }
            best = Some(best.map_or(took, |b| b.min(took)));
        }
        best
    }

    /// The node to use now: by the configured choice among the reachable ones.
    async fn choose(&self, skip: Option<&str>) -> Vec<String> {
        let mut order: Vec<String> = self
            .nodes
            .addrs()
            .into_iter()
            .filter(|a| Some(a.as_str()) != skip)
            .collect();
        match self.opts.choice {
            NodeChoice::First => {}
            NodeChoice::LeastUsers => {
                order.sort_by_key(|a| self.nodes.users(a).unwrap_or(u32::MAX))
            }
            NodeChoice::LowestRtt => {
                let mut timed = Vec::new();
                for a in order {
                    let rtt = self.measure(&a).await.unwrap_or(Duration::MAX);
                    timed.push((rtt, a));
                }
                timed.sort_by_key(|(rtt, _)| *rtt);
                order = timed.into_iter().map(|(_, a)| a).collect();
            }
        }
        if let Some(s) = skip {
            // The node just lost goes last: it may be back by the time all others failed.
            order.push(s.to_owned());
        }
        order
    }

    /// Whether another node is clearly better than `addr` (see the module docs).
    async fn better_than(&self, addr: &str) -> Option<String> {
        match self.opts.choice {
            NodeChoice::First => None,
            NodeChoice::LeastUsers => {
                let mine = self.nodes.users(addr)?;
                self.nodes
                    .addrs()
                    .into_iter()
                    .filter(|a| a != addr && self.nodes.reachable(a))
                    .filter_map(|a| self.nodes.users(&a).map(|u| (u, a)))
                    .filter(|(u, _)| u + USERS_MARGIN <= mine && u * 5 <= mine * 4)
                    .min()
                    .map(|(_, a)| a)
            }
            NodeChoice::LowestRtt => {
                let mine = self.measure(addr).await?;
                let mut best: Option<(Duration, String)> = None;
                for a in self.nodes.addrs().into_iter().filter(|a| a != addr) {
                    if let Some(rtt) = self.measure(&a).await
                        && best.as_ref().is_none_or(|(b, _)| rtt < *b)
                    {
                        best = Some((rtt, a));
                    }
                }
                let (rtt, a) = best?;
                (rtt.mul_f64(1.0 / 0.7) <= mine && rtt + RTT_MARGIN <= mine).then_some(a)
            }
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut skip: Option<String> = None;
        let mut prefer: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut order = self.choose(skip.as_deref()).await;
            if let Some(p) = prefer.take() {
                order.retain(|a| *a != p);
                order.insert(0, p);
            }
            let mut connected = None;
            for addr in order {
                if let Some(c) = self.connect(&addr, Duration::from_secs(2)).await {
                    connected = Some((addr, c));
                    break;
                }
            }
            let Some((addr, (client, eventloop))) = connected else {
                // Nobody answers: wait a little (jittered) and try the list again.
                let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    cmd = commands.recv() => match cmd {
                        Some(Command::Request { req, reply }) => {
                            self.pending.insert(req.req.clone(), (req, reply, Instant::now()));
                        }
                        Some(Command::Close) | None => return,
                    },
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                skip = None;
                continue;
            };
            backoff = Duration::from_millis(50);
            match self.session(&addr, client, eventloop, &mut commands).await {
                End::Close => return,
                End::Lost(_) => skip = Some(addr),
                End::Switch(to) => {
                    skip = None;
                    prefer = Some(to);
                }
            }
        }
    }

    async fn session(
        &mut self,
        addr: &str,
        client: AsyncClient,
        mut eventloop: EventLoop,
        commands: &mut mpsc::Receiver<Command>,
    ) -> End {
        let me = self.opts.username.clone();
        self.open_session(addr, &client, &me).await;
        let mut live = Live {
            node: None,
            last_beat: Instant::now(),
            first_directory: true,
        };
        let patience = self.opts.heartbeat_interval * self.opts.missed_heartbeats
            + self.opts.heartbeat_interval / 2;
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let mut recheck = tokio::time::interval(self.opts.recheck_interval);
        recheck.tick().await;
        let end = loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(end) = self.on_publish(addr, &client, &me, p, &mut live).await {
                            break end;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break End::Lost(format!("connection lost: {e}")),
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Request { req, reply }) => {
                        publish_request(&client, &me, &req);
                        self.pending.insert(req.req.clone(), (req, reply, Instant::now()));
                    }
                    Some(Command::Close) | None => break End::Close,
                },
                _ = tick.tick() => {
                    if live.last_beat.elapsed() > patience {
                        break End::Lost(format!(
                            "no heartbeat for {} ms",
                            live.last_beat.elapsed().as_millis()
                        ));
                    }
                    self.resend_overdue(&client, &me);
                }
                _ = recheck.tick() => {
                    if let Some(to) = self.better_than(addr).await {
                        break End::Switch(to);
                    }
                }
            }
        };
        self.close_session(addr, &client, &mut eventloop, &end, live.node)
            .await;
        end
    }

    /// A new session: subscribes, sends again the requests the last node never answered
    /// (same req and seq, so the recipient can drop a copy that did get through), and
    /// says so.
    async fn open_session(&mut self, addr: &str, client: &AsyncClient, me: &str) {
        for filter in [
            contract::mesh_inbox(me),
            contract::mesh_result(me),
            contract::MESH_HEARTBEAT.to_owned(),
            contract::MESH_DIRECTORY.to_owned(),
            contract::MESH_ONLINE.to_owned(),
        ] {
            let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
        }
        for (req, _, sent) in self.pending.values_mut() {
            *sent = Instant::now();
            publish_request(client, me, req);
        }
        self.current.send_replace(Current {
            addr: Some(addr.to_owned()),
            node: None,
        });
        let _ = self
            .events
            .send(ClientEvent::Connected {
                addr: addr.to_owned(),
            })
            .await;
    }

    /// Handles one message from the node; `Some` ends the session.
    async fn on_publish(
        &mut self,
        addr: &str,
        client: &AsyncClient,
        me: &str,
        p: rumqttc::Publish,
        live: &mut Live,
    ) -> Option<End> {
        if p.topic == contract::MESH_HEARTBEAT {
            if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&p.payload) {
                live.last_beat = Instant::now();
                if live.node.is_none() {
                    live.node = Some(hb.node.clone());
                    self.current.send_replace(Current {
                        addr: Some(addr.to_owned()),
                        node: Some(hb.node.clone()),
                    });
                }
                self.nodes.set_users(addr, hb.users);
            }
        } else if p.topic == contract::MESH_DIRECTORY {
            if let Ok(dir) = serde_json::from_slice::<Directory>(&p.payload) {
                self.nodes.merge(&dir, self.opts.discover);
                if live.first_directory {
                    // The choice on connect, now that we know the mesh.
                    live.first_directory = false;
                    if let Some(to) = self.better_than(addr).await {
                        return Some(End::Switch(to));
                    }
                }
            }
        } else if p.topic == contract::MESH_ONLINE {
            if let Ok(online) = serde_json::from_slice::<OnlineUsers>(&p.payload) {
                self.online.send_replace(online.users);
            }
        } else if p.topic == contract::mesh_result(me) {
            if let Ok(result) = serde_json::from_slice::<SendResult>(&p.payload)
                && let Some((_, reply, _)) = self.pending.remove(&result.req)
            {
                let _ = reply.send(result);
            }
        } else if p.topic == contract::mesh_inbox(me)
            && let Ok(msg) = serde_json::from_slice::<InboxMessage>(&p.payload)
        {
            self.receive(client, msg).await;
        }
        None
    }

    /// A request unanswered for long goes again (same req and seq).
    fn resend_overdue(&mut self, client: &AsyncClient, me: &str) {
        let timeout = self.opts.request_timeout;
        for (req, _, sent) in self.pending.values_mut() {
            if sent.elapsed() > timeout {
                *sent = Instant::now();
                publish_request(client, me, req);
            }
        }
    }

    /// Ends a session: a lost node is reported (and marked unreachable), a chosen end
    /// says goodbye.
    async fn close_session(
        &mut self,
        addr: &str,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        end: &End,
        node: Option<String>,
    ) {
        match end {
            End::Lost(reason) => {
                self.nodes.set_reachable(addr, false);
                let _ = self
                    .events
                    .send(ClientEvent::NodeLost {
                        addr: addr.to_owned(),
                        node,
                        at: Instant::now(),
                        reason: reason.clone(),
                    })
                    .await;
            }
            End::Switch(_) | End::Close => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        self.current.send_replace(Current::default());
        self.nodes.save();
    }

    /// Acknowledges (also a duplicate, so its sender stops retrying) and passes on a
    /// message seen for the first time.
    async fn receive(&mut self, client: &AsyncClient, msg: InboxMessage) {
        if msg.ack
            && let Ok(payload) = serde_json::to_vec(&InboxAck { id: msg.id.clone() })
        {
            let _ = client.try_publish(
                contract::mesh_ack(&self.opts.username),
                QoS::AtLeastOnce,
                false,
                payload,
            );
        }
        let fresh_id = self.seen_ids.insert(msg.id.clone());
        let fresh_seq = msg.seq == 0 || self.seen_seqs.insert((msg.from.clone(), msg.seq));
        if fresh_id && fresh_seq {
            let _ = self.events.send(ClientEvent::Message(msg)).await;
        }
    }
}
