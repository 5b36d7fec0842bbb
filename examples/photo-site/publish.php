<?php
// The web tier, as in 2011: php-amqplib publishing tasks while a page is served.
//   php publish.php                 (broker from AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/)
// Sends welcome mails, photo events (topic), cache invalidations (fanout), and asks the
// antispam RPC service about comments, waiting for each answer over direct reply-to.
// Prints one JSON line per antispam answer, then "published ..." counts.
require_once getenv('PHP_AMQPLIB_AUTOLOAD') ?: '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Message\AMQPMessage;

$url = parse_url(getenv('AMQP_URL') ?: 'amqp://guest:guest@127.0.0.1:5672/');
$vhost = isset($url['path']) && strlen($url['path']) > 1 ? urldecode(substr($url['path'], 1)) : '/';
$mails = (int)(getenv('MAILS') ?: 40);
$photos = (int)(getenv('PHOTOS') ?: 60);
$views = (int)(getenv('VIEWS') ?: 100);
$invalidations = (int)(getenv('INVALIDATIONS') ?: 5);

$conn = new AMQPStreamConnection($url['host'], $url['port'] ?? 5672, $url['user'] ?? 'guest',
                                 $url['pass'] ?? 'guest', $vhost);
$ch = $conn->channel();
$ch->confirm_select();                        // every publish below is confirmed
$ch->exchange_declare('photos', 'topic', false, true, false);
$ch->exchange_declare('cache', 'fanout', false, true, false);
$ch->queue_declare('mail', false, true, false, false);

$json = function (array $data, array $props = []) {
    return new AMQPMessage(json_encode($data), $props + [
        'content_type' => 'application/json',
        'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
    ]);
};

for ($i = 1; $i <= $mails; $i++) {
    $ch->basic_publish($json(['id' => "php-$i", 'to' => "user$i@example.com"],
                             ['message_id' => "mail-php-$i"]), '', 'mail');
}
for ($p = 1; $p <= $photos; $p++) {
    $ch->basic_publish($json(['photo' => $p]), 'photos', 'photo.uploaded');
    if ($p % 2 == 0) {
        $ch->basic_publish($json(['photo' => $p]), 'photos', 'photo.edited');
    }
}
for ($v = 1; $v <= $views; $v++) {
    $ch->basic_publish($json(['photo' => $v % $photos + 1]), 'photos', 'photo.viewed');
}
for ($u = 1; $u <= $invalidations; $u++) {
    $ch->basic_publish(new AMQPMessage("user:$u"), 'cache');
}
$ch->wait_for_pending_acks(30);

// The antispam check is a call: publish the comment, wait for the verdict.
$rpc = $conn->channel();
$answers = [];
$rpc->basic_consume('amq.rabbitmq.reply-to', '', false, true, false, false,
    function (AMQPMessage $reply) use (&$answers) {
        $answers[$reply->get('correlation_id')] = $reply;
    });
$comments = [
    ['id' => 1, 'text' => 'Lovely light in this one'],
    ['id' => 2, 'text' => 'Cheap VIAGRA here'],
    ['id' => 3, 'text' => 'Where was this taken?'],
    ['id' => 4, 'text' => 'Best online casino'],
    ['id' => 5, 'text' => ''],                 // the service refuses it: an error reply
];
foreach ($comments as $comment) {
    $rpc->basic_publish(new AMQPMessage(json_encode($comment), [
        'content_type' => 'application/json',
        'correlation_id' => "comment-{$comment['id']}",
        'reply_to' => 'amq.rabbitmq.reply-to',
    ]), '', 'antispam');
    while (!isset($answers["comment-{$comment['id']}"])) {
        $rpc->wait(null, false, 15);           // throws AMQPTimeoutException after 15 s
    }
    $reply = $answers["comment-{$comment['id']}"];
    $headers = $reply->has('application_headers')
        ? $reply->get('application_headers')->getNativeData() : [];
    if (isset($headers['x-rpc-error'])) {
        echo json_encode(['comment' => $comment['id'], 'error' => $headers['x-rpc-error']]), "\n";
    } else {
        $verdict = json_decode($reply->getBody(), true);
        echo json_encode(['comment' => $comment['id'], 'spam' => $verdict['spam']]), "\n";
    }
}
echo "published mails=$mails photos=$photos views=$views invalidations=$invalidations\n";
$rpc->close();
$ch->close();
$conn->close();
