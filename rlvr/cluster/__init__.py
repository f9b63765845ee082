"""Ray underneath the groups: joining or starting a cluster (`connect`), placement groups
(`placement`), what every actor process needs (`env`), and waiting on remote calls with
deadlines that fail fast when an actor dies (`remote`)."""
