<?php
// The same web tier through the PECL amqp extension (Debian's php-amqp): newsletter mails
// and photo edits from the admin pages.  php publish_ext.php   (broker from AMQP_URL)
$url = parse_url(getenv('AMQP_URL') ?: 'amqp://guest:guest@127.0.0.1:5672/');
$vhost = isset($url['path']) && strlen($url['path']) > 1 ? urldecode(substr($url['path'], 1)) : '/';
$mails = (int)(getenv('EXT_MAILS') ?: 20);

$conn = new AMQPConnection([
    'host' => $url['host'], 'port' => $url['port'] ?? 5672, 'vhost' => $vhost,
    'login' => $url['user'] ?? 'guest', 'password' => $url['pass'] ?? 'guest',
]);
$conn->connect();
$ch = new AMQPChannel($conn);
$ch->confirmSelect();
$default = new AMQPExchange($ch);             // the default exchange: routes by queue name
for ($i = 1; $i <= $mails; $i++) {
    $default->publish(json_encode(['id' => "ext-$i", 'kind' => 'newsletter']), 'mail',
                      AMQP_NOPARAM, ['content_type' => 'application/json', 'delivery_mode' => 2,
                                     'message_id' => "mail-ext-$i"]);
}
$photos = new AMQPExchange($ch);
$photos->setName('photos');
$photos->publish(json_encode(['photo' => 1]), 'photo.edited', AMQP_NOPARAM,
                 ['content_type' => 'application/json', 'delivery_mode' => 2]);
$ch->waitForConfirm(30);
echo "published ext-mails=$mails edits=1\n";
$conn->disconnect();
