"""A fake Open-Meteo (forecast + geocoding) on 127.0.0.1 for the browser test.

Prints its port on the first line, then serves until killed: every place is 3 °C and
dry; a search for "catania" finds Catania."""
import http.server, json, socketserver, sys, time, urllib.parse

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/v1/search":
            name = q.get("name", [""])[0].lower()
            results = [{"id": 2525068, "name": "Catania", "latitude": 37.49223, "longitude": 15.07041,
                        "country_code": "IT", "admin1": "Sicily", "timezone": "Europe/Rome",
                        "country": "Italy"}] if name.startswith("catania") else []
            body = {"results": results} if results else {}
        elif url.path == "/v1/forecast":
            lats = q.get("latitude", [""])[0].split(",")
            # Open-Meteo stamps `current` with the start of the present 15-minute interval (UTC).
            now = int(time.time())
            stamp = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - now % 900))
            items = []
            for i, lat in enumerate(lats):
                item = {"latitude": float(lat), "current": {"time": stamp, "interval": 900,
                        "temperature_2m": 3.0, "precipitation": 0.0, "rain": 0.0, "showers": 0.0,
                        "snowfall": 0.0, "weather_code": 3}}
                if i:
                    item["location_id"] = i
                items.append(item)
            body = items[0] if len(items) == 1 else items
        else:
            self.send_response(404); self.end_headers(); return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

with socketserver.TCPServer(("127.0.0.1", 0), Handler) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
