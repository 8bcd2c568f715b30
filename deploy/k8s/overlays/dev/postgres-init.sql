-- One database per service, each owned by its own role: a service can reach
-- only its own tables, as in production. Runs once, on the first start of an
-- empty data volume. Development passwords (the role's name); not secrets.
CREATE ROLE agora_user LOGIN PASSWORD 'agora_user';
CREATE DATABASE agora_user OWNER agora_user;
CREATE ROLE agora_order LOGIN PASSWORD 'agora_order';
CREATE DATABASE agora_order OWNER agora_order;
CREATE ROLE agora_payment LOGIN PASSWORD 'agora_payment';
CREATE DATABASE agora_payment OWNER agora_payment;
CREATE ROLE agora_notification LOGIN PASSWORD 'agora_notification';
CREATE DATABASE agora_notification OWNER agora_notification;
-- Last on purpose: the compose healthcheck waits for this database.
CREATE ROLE agora_inventory LOGIN PASSWORD 'agora_inventory';
CREATE DATABASE agora_inventory OWNER agora_inventory;
