-- a coordinator database made by fleetbench 0.1 (schema version 2, commit 200cfce), for the migration test
BEGIN TRANSACTION;
CREATE TABLE acks (
	msg_id VARCHAR(200) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	ts FLOAT NOT NULL, 
	job_id VARCHAR(128), 
	state VARCHAR(32), 
	data TEXT NOT NULL, 
	PRIMARY KEY (msg_id)
);
INSERT INTO "acks" VALUES('ack:j1:done','pi-old',1.79577664825518417356e+09,'j1','done','{"v":1,"id":"ack:j1:done","kind":"acks","device_id":"pi-old","ts":1795776648.2551842,"data":{"job_id":"j1","state":"done","measured":1,"failed":[]}}');
INSERT INTO "acks" VALUES('ack:abc123:pi-old:installed','pi-old',1.79577664825519752499e+09,'abc123:pi-old','installed','{"v":1,"id":"ack:abc123:pi-old:installed","kind":"acks","device_id":"pi-old","ts":1795776648.2551975,"data":{"job_id":"abc123:pi-old","push_id":"abc123:pi-old","state":"installed","p50_ms":12.0}}');
CREATE TABLE decisions (
	id INTEGER NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	at FLOAT NOT NULL, 
	space VARCHAR(32) NOT NULL, 
	arch VARCHAR(400), 
	budget_ms FLOAT NOT NULL, 
	predicted_ms FLOAT, 
	accuracy FLOAT, 
	rollout_id VARCHAR(32), 
	inputs TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE deployments (
	push_id VARCHAR(128) NOT NULL, 
	rollout_id VARCHAR(32) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	stage VARCHAR(16) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	sent_at FLOAT, 
	last_ack_ts FLOAT, 
	updated_at FLOAT NOT NULL, 
	p50_ms FLOAT, 
	detail TEXT, 
	PRIMARY KEY (push_id)
);
INSERT INTO "deployments" VALUES('abc123:pi-old','abc123','pi-old','canary','installed',1,NULL,NULL,2.0,12.0,NULL);
CREATE TABLE devices (
	device_id VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	state_at FLOAT NOT NULL, 
	platform VARCHAR(32), 
	sku VARCHAR(200), 
	version VARCHAR(32), 
	capabilities TEXT, 
	first_seen FLOAT NOT NULL, 
	last_seen FLOAT NOT NULL, 
	health TEXT, 
	health_at FLOAT, 
	degradation_index FLOAT, 
	PRIMARY KEY (device_id)
);
INSERT INTO "devices" VALUES('pi-old','online',1.79577664826142168047e+09,'raspberry-pi','Raspberry Pi 4 Model B Rev 1.4','0.1.0','{"arch": "aarch64", "cpu_model": "Cortex-A72", "cores_logical": 4, "cores_physical": 4, "mem_total_mb": 3794.0, "backends": {"litert": "ai-edge-litert 2.3.0"}, "accelerators": []}',1.79577664825738549233e+09,1.79577664825519752499e+09,'{"health": {"thermal": {"temperatures_c": {"cpu-thermal": 48.7}}}, "degradation": {"index": 1.02, "baseline_ms": 0.3, "last_ms": 0.306, "baseline_at": 1.0, "last_at": 2.0, "measurements": 3}}',1.7957766482551245689e+09,1.02);
CREATE TABLE health (
	msg_id VARCHAR(200) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	ts FLOAT NOT NULL, 
	degradation_index FLOAT, 
	data TEXT NOT NULL, 
	PRIMARY KEY (msg_id)
);
INSERT INTO "health" VALUES('h1','pi-old',1.7957766482551245689e+09,1.02,'{"health": {"thermal": {"temperatures_c": {"cpu-thermal": 48.7}}}, "degradation": {"index": 1.02, "baseline_ms": 0.3, "last_ms": 0.306, "baseline_at": 1.0, "last_at": 2.0, "measurements": 3}}');
CREATE TABLE rerank_state (
	device_id VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	job_id VARCHAR(128), 
	space VARCHAR(32), 
	rounds INTEGER NOT NULL, 
	started_at FLOAT, 
	updated_at FLOAT NOT NULL, 
	degradation_index FLOAT, 
	detail TEXT, 
	PRIMARY KEY (device_id)
);
INSERT INTO "rerank_state" VALUES('pi-old','decided','j1','nas-bench-201',1,1.0,2.0,1.02,'x');
CREATE TABLE results (
	msg_id VARCHAR(400) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	ts FLOAT NOT NULL, 
	job_id VARCHAR(128), 
	model VARCHAR(400), 
	space VARCHAR(32), 
	arch VARCHAR(400), 
	p50_ms FLOAT, 
	data TEXT NOT NULL, 
	PRIMARY KEY (msg_id)
);
INSERT INTO "results" VALUES('result:j1:x','pi-old',1.79577664825516295429e+09,'j1','nas-bench-201:|a~0|:seed=0','nas-bench-201','|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|',12.5,'{"v":1,"id":"result:j1:x","kind":"results","device_id":"pi-old","ts":1795776648.255163,"data":{"job_id":"j1","model":"nas-bench-201:|a~0|:seed=0","architecture":{"space":"nas-bench-201","arch":"|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|","seed":0,"classes":null,"resolution":null,"format":"onnx"},"result":{"stats":{"p50_ms":12.5}},"conditions":{}}}');
CREATE TABLE rollouts (
	rollout_id VARCHAR(32) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	format VARCHAR(16) NOT NULL, 
	size INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	blob TEXT NOT NULL, 
	target_kind VARCHAR(16) NOT NULL, 
	target VARCHAR(200) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	canary_fraction FLOAT NOT NULL, 
	max_failure_share FLOAT NOT NULL, 
	max_latency_ms FLOAT, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	detail TEXT, 
	PRIMARY KEY (rollout_id)
);
INSERT INTO "rollouts" VALUES('abc123','m','1','onnx',10,'0000000000000000000000000000000000000000000000000000000000000000','/x','device','pi-old','done',0.1,0.2,NULL,1.0,2.0,'1 of 1 installed');
CREATE TABLE schema_version (
	version INTEGER NOT NULL
);
INSERT INTO "schema_version" VALUES(2);
CREATE INDEX ix_health_device_id ON health (device_id);
CREATE INDEX ix_results_device_id ON results (device_id);
CREATE INDEX ix_acks_job_id ON acks (job_id);
CREATE INDEX ix_acks_device_id ON acks (device_id);
CREATE INDEX ix_deployments_device_id ON deployments (device_id);
CREATE INDEX ix_deployments_rollout_id ON deployments (rollout_id);
CREATE INDEX ix_decisions_device_id ON decisions (device_id);
COMMIT;
