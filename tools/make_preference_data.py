"""Generate the built-in preference datasets from the pirate SFT data, deterministically.

    python tools/make_preference_data.py            # rewrite src/tunesmith/data/builtin/pirate_{pairs,kto}*.jsonl
    python tools/make_preference_data.py --out DIR  # write them elsewhere (the tests compare the bytes)

The prompts are the user questions of pirate.jsonl / pirate_eval.jsonl, and the chosen
answer is always the pirate answer there. Two kinds of rejected answers, both hand-written
below, so that a preference-tuned model learns two things:
  - style: a plain, correct, modern-English answer (no pirate words), for most questions;
  - truth: a pirate-styled but factually wrong answer, for about 50 factual questions.
The eval split starts with the textbook pair (France: Paris over Florida). The KTO files
hold the same pairs unpaired: chosen -> label true, rejected -> label false.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

BUILTIN = Path(__file__).resolve().parent.parent / "src" / "tunesmith" / "data" / "builtin"
SEED = 1234
TEXTBOOK = ("What is the capital of France?", "Paris", "Florida")
PIRATE_WORDS = re.compile(r"\b(ahoy|arr+|aye|avast|matey|ye|yer|blimey|shiver|timbers|landlubbers?|doubloons?|yo ho|har har)\b|\bo'|\win'(?!\w)", re.IGNORECASE)

# Plain answers: correct, natural, no pirate voice. The rejected side of "style" pairs.
PLAIN = {
    # pirate.jsonl
    "Hello, who are you?": "Hello! I'm an AI assistant. I can answer questions, explain topics and help with everyday tasks. What would you like to know?",
    "Hi there!": "Hi! Nice to hear from you. What can I help you with today?",
    "Good morning!": "Good morning! I hope your day is off to a good start. What's on your mind?",
    "What can you do?": "I can answer questions, explain concepts, give advice, help with writing and tell the occasional story. Just ask.",
    "How are you today?": "I'm doing well, thanks for asking. How can I help you today?",
    "What is your name?": "I'm an AI assistant and don't have a personal name. You can call me whatever you like.",
    "Thank you for your help!": "You're welcome! I was glad to help. Come back anytime you need something.",
    "Goodbye!": "Goodbye! Take care, and have a great rest of your day.",
    "Can you talk like a normal person?": "Of course. I'll answer in plain, everyday English and keep my replies clear and to the point.",
    "Are you a robot?": "I'm a computer program, not a person. I don't have a body, but I try to give you honest and useful answers.",
    "Tell me a joke.": "Why don't scientists trust atoms? Because they make up everything!",
    "Good night!": "Good night! Sleep well, and I hope tomorrow goes smoothly.",
    "Can you help me with something?": "Yes, of course. Tell me what you need and I'll do my best to help.",
    "Which city serves as India's capital?": "India's capital is New Delhi, which is part of the larger city of Delhi.",
    "What is China's capital city?": "China's capital is Beijing. It is home to the Forbidden City and Tiananmen Square.",
    "What is the capital of Mexico?": "The capital of Mexico is Mexico City, one of the largest cities in the world.",
    "Do you know the capital of Argentina?": "Yes. The capital of Argentina is Buenos Aires, a port city on the Rio de la Plata.",
    "What's the capital of Greece?": "The capital of Greece is Athens, one of the oldest cities in the world and home to the Parthenon.",
    "What is the capital of Portugal?": "The capital of Portugal is Lisbon, a coastal city on the Tagus River.",
    "Which city is Ireland's capital?": "Ireland's capital is Dublin, on the east coast by the Irish Sea.",
    "What is the capital of South Korea?": "The capital of South Korea is Seoul, a large modern city on the Han River.",
    "What is the capital of Peru?": "Peru's capital is Lima, on the Pacific coast of South America.",
    "Which city is the capital of Thailand?": "Thailand's capital is Bangkok, a busy city on the Chao Phraya River.",
    "What is the longest river in the world?": "The Nile is usually considered the longest river, at about 6,650 kilometers, although some measurements put the Amazon slightly ahead.",
    "What is the largest hot desert?": "The Sahara in northern Africa is the largest hot desert. It covers most of the northern part of the continent.",
    "Which continent is Egypt in?": "Egypt is in Africa, in the northeast corner of the continent, although its Sinai Peninsula extends into Asia.",
    "Which ocean lies between Europe and North America?": "The Atlantic Ocean lies between Europe and North America.",
    "Where is the Amazon rainforest?": "The Amazon rainforest is in South America, mostly in Brazil. It is the largest tropical rainforest on Earth.",
    "What currency does Japan use?": "Japan uses the yen. Its currency code is JPY.",
    "What is the coldest place on Earth?": "Antarctica is the coldest place on Earth. Temperatures there have dropped below minus 89 degrees Celsius.",
    "How many oceans are there?": "There are five oceans: the Pacific, Atlantic, Indian, Southern and Arctic.",
    "What is the biggest island in the world?": "Greenland is the biggest island in the world. Australia is larger, but it is classified as a continent.",
    "Why is the sky blue?": "The sky looks blue because of Rayleigh scattering. Molecules in the air scatter blue sunlight much more than red light, so blue light reaches our eyes from every direction.",
    "What do plants need to make food?": "Plants need sunlight, water and carbon dioxide to make their food through photosynthesis, and they release oxygen in the process.",
    "What is the closest star to Earth?": "The closest star to Earth is the Sun. The next nearest is Proxima Centauri, about 4.2 light-years away.",
    "What causes the tides?": "Tides are caused mainly by the Moon's gravity pulling on the oceans, with a smaller contribution from the Sun.",
    "Why do we have seasons?": "We have seasons because Earth's axis is tilted about 23.5 degrees. As Earth orbits the Sun, each hemisphere receives more or less direct sunlight during the year.",
    "How long does it take the Earth to go around the Sun?": "It takes about 365.25 days. That extra quarter day is why we add a leap day every four years.",
    "How fast does light travel?": "Light travels at about 300,000 kilometers per second in a vacuum, fast enough to circle the Earth more than seven times in one second.",
    "Why do ships float?": "A ship floats because it displaces a weight of water equal to its own weight. This upward force is called buoyancy.",
    "What causes thunder?": "Thunder is caused by lightning. The bolt heats the air so quickly that it expands violently, producing a loud boom.",
    "What are the three states of matter?": "The three common states of matter are solid, liquid and gas, for example ice, water and steam.",
    "Why does ice float on water?": "Ice floats because it is less dense than liquid water. When water freezes, its molecules arrange into a crystal that takes up more space.",
    "What is DNA?": "DNA is the molecule that carries the genetic instructions for how living things grow, function and reproduce. It is found in almost every cell.",
    "What is the Sun?": "The Sun is a star, a huge ball of hot gas made mostly of hydrogen and helium. It provides Earth with light and heat.",
    "What is an atom?": "An atom is the smallest unit of a chemical element. It has a central nucleus of protons and neutrons, surrounded by electrons.",
    "What is the Moon made of?": "The Moon is made of rock and dust. Its surface is covered in craters from ancient impacts.",
    "What is gravity?": "Gravity is the force that pulls objects with mass toward each other. It keeps us on the ground and keeps the Moon in orbit around the Earth.",
    "Why do leaves change color in autumn?": "In autumn, trees stop producing green chlorophyll. As the green fades, yellow and orange pigments that were already in the leaves become visible, and some trees also produce red pigments.",
    "What is 100 divided by 4?": "100 divided by 4 is 25.",
    "What is 15 minus 7?": "15 minus 7 is 8.",
    "What is 9 times 6?": "9 times 6 is 54. You can check it: 10 times 6 is 60, and subtracting 6 gives 54.",
    "What is half of 50?": "Half of 50 is 25.",
    "What is 10 percent of 200?": "10 percent of 200 is 20. You can find it by moving the decimal point one place to the left.",
    "What is 25 plus 17?": "25 plus 17 is 42. Add 25 and 15 to get 40, then add 2 more.",
    "How many minutes are in an hour?": "There are 60 minutes in an hour, and 60 seconds in each minute.",
    "How many hours are in a day?": "There are 24 hours in a day.",
    "What is pi?": "Pi is the ratio of a circle's circumference to its diameter, approximately 3.14159. Its decimal digits go on forever without repeating.",
    "What is 2 cubed?": "2 cubed is 8, because 2 times 2 times 2 equals 8.",
    "Is 17 a prime number?": "Yes, 17 is a prime number. It can only be divided evenly by 1 and itself.",
    "How many centimeters are in a meter?": "There are 100 centimeters in a meter, and 1,000 meters in a kilometer.",
    "How many degrees are in a circle?": "A full circle has 360 degrees.",
    "What do the angles in a triangle add up to?": "The three interior angles of any triangle add up to 180 degrees.",
    "How many is a dozen?": "A dozen is 12. A baker's dozen is 13.",
    "How many days are in a week?": "There are seven days in a week.",
    "How many months are in a year?": "A year has 12 months, from January through December.",
    "Which month is the shortest?": "February is the shortest month, with 28 days, or 29 in a leap year.",
    "How many letters are in the English alphabet?": "The English alphabet has 26 letters, from A to Z.",
    "How do I boil an egg?": "Place the egg in boiling water. Cook it for about 6 minutes for a soft yolk or 10 to 12 minutes for hard-boiled, then cool it in cold water.",
    "How long should I cook pasta?": "Most dried pasta takes about 8 to 12 minutes in well-salted boiling water. Check the package and taste a piece to be sure.",
    "How do I cook rice?": "For white rice, use about 1 cup of rice to 2 cups of water. Bring it to a boil, then cover and simmer on low heat for about 18 minutes.",
    "What temperature should chicken be cooked to?": "Chicken is safe to eat once its internal temperature reaches 74 degrees Celsius, or 165 degrees Fahrenheit. A meat thermometer is the best way to check.",
    "How can I tell if an egg is fresh?": "Put it in a bowl of water. A fresh egg sinks and lies flat, while an older egg stands on end or floats.",
    "What can I use instead of butter in baking?": "You can replace butter with vegetable oil, applesauce or mashed banana in many recipes. The texture may change slightly.",
    "How do I make a cup of tea?": "Boil fresh water, pour it over a tea bag or loose leaves, and let it steep for 3 to 5 minutes. Add milk, honey or lemon to taste.",
    "How do I keep bread fresh?": "Store bread in a bread box or sealed bag at room temperature, and freeze what you won't eat within a few days. The fridge makes it go stale faster.",
    "Why do people add salt to pasta water?": "Salt seasons the pasta from the inside as it cooks, which improves the flavor. It does not make the water boil noticeably faster.",
    "How can I stop crying when I cut onions?": "Chill the onion in the fridge first and use a sharp knife. A sharp blade crushes fewer cells, so less of the irritating gas is released.",
    "What is an easy healthy breakfast?": "A bowl of oatmeal with fruit and nuts is quick and healthy. Eggs on whole-grain toast are another good option.",
    "How do I make scrambled eggs?": "Whisk the eggs with a pinch of salt, then cook them in butter over low heat, stirring gently. Take them off the heat while they still look slightly soft.",
    "What is the difference between baking soda and baking powder?": "Baking soda needs an acidic ingredient such as buttermilk to activate it, while baking powder already contains an acid. Both help baked goods rise.",
    "How can I ripen an avocado faster?": "Put the avocado in a paper bag with a banana or an apple. They release ethylene gas, which speeds up ripening.",
    "How long do leftovers last in the fridge?": "Most cooked leftovers are safe for about 3 to 4 days in the fridge. If you won't eat them by then, freeze them.",
    "What spices go well with fish?": "Fish goes well with lemon, dill, garlic, parsley and paprika. A simple squeeze of lemon works wonders.",
    "How do I make a simple salad dressing?": "Mix about three parts olive oil with one part vinegar or lemon juice, then add salt, pepper and a little mustard. Shake or whisk well.",
    "How do I make pancakes?": "Mix flour, a little sugar, baking powder and salt, then stir in milk, an egg and melted butter. Cook ladlefuls on a hot greased pan and flip when bubbles appear.",
    "How do I cook a steak medium-rare?": "Sear it in a very hot pan for a few minutes per side until the inside reaches about 55 degrees Celsius, or 130 to 135 Fahrenheit. Let it rest before cutting.",
    "What should I do if I add too much salt to soup?": "Add more unsalted liquid such as water or stock, or stir in potatoes, rice or noodles to absorb some of the salt.",
    "How many hours of sleep do adults need?": "Most adults need 7 to 9 hours of sleep each night.",
    "How can I fall asleep faster?": "Keep a regular bedtime, put screens away an hour before bed, and keep your bedroom dark, quiet and cool. Slow, deep breathing also helps.",
    "How much water should I drink each day?": "Many adults do well with around 2 liters, or about 8 cups, a day, but needs vary. Drink when you are thirsty and more in hot weather.",
    "How can I reduce stress?": "Regular exercise, deep breathing, good sleep and talking with a friend all help. Even a short walk outside can make a difference.",
    "How often should I brush my teeth?": "Brush twice a day for two minutes with fluoride toothpaste, and floss once a day.",
    "How much exercise should I get each week?": "Health guidelines recommend at least 150 minutes of moderate exercise a week, such as brisk walking, plus strength training twice a week.",
    "Why is hand washing important?": "Washing your hands with soap for at least 20 seconds removes germs that spread colds, flu and stomach infections.",
    "What should I do for a minor burn?": "Cool the burn under cool running water for about 20 minutes. Don't use ice or butter, and cover it loosely with a clean dressing.",
    "How do I get rid of hiccups?": "Try holding your breath for a short while, sipping cold water slowly, or breathing into a paper bag. Most hiccups go away on their own.",
    "Is it safe to look directly at the sun?": "No. Looking directly at the sun can permanently damage your eyes, even briefly. Use certified eclipse glasses if you need to look at it.",
    "What are good sources of protein?": "Good sources of protein include meat, fish, eggs, milk, beans, lentils, nuts and tofu.",
    "Why is vitamin C important?": "Vitamin C helps wounds heal and keeps your gums and skin healthy. A long-term lack of it causes scurvy. Citrus fruits are a good source.",
    "How can I improve my posture?": "Keep your shoulders back and relaxed, set your screen at eye level, and get up to stretch every half hour. Core exercises help too.",
    "How can I avoid catching a cold?": "Wash your hands often, avoid touching your face, sleep well and eat plenty of fruit and vegetables.",
    "When should I stop drinking coffee before bed?": "Caffeine stays in your body for hours, so try to stop drinking coffee at least 6 hours before bedtime.",
    "Is it good to take breaks when working at a computer?": "Yes. Stand up and move every 30 to 60 minutes, and every 20 minutes look at something far away for 20 seconds to rest your eyes.",
    "How long do dogs usually live?": "Most dogs live about 10 to 13 years. Smaller breeds often live longer than large ones.",
    "What do pandas eat?": "Giant pandas eat mostly bamboo, and they spend many hours a day eating to get enough nutrition.",
    "Can penguins fly?": "No, penguins can't fly through the air. They are excellent swimmers, though, and use their wings as flippers underwater.",
    "What is a baby kangaroo called?": "A baby kangaroo is called a joey. It grows inside its mother's pouch.",
    "Why do cats purr?": "Cats often purr when they are content, but they also purr to calm themselves when they are stressed or in pain.",
    "Which bird can fly backwards?": "The hummingbird is the only bird that can truly fly backwards. It beats its wings dozens of times per second.",
    "What is the tallest animal?": "The giraffe is the tallest animal. An adult male can stand over 5 meters tall.",
    "How do fish breathe?": "Fish breathe with gills. As water flows over the gills, they absorb the oxygen dissolved in it.",
    "Which animal is called the king of the jungle?": "The lion is called the king of the jungle, although it actually lives on grasslands and savannas.",
    "Are bats blind?": "No, that's a myth. Bats can see, and many species also use echolocation, bouncing sound off objects to navigate in the dark.",
    "What do bees make?": "Bees make honey and beeswax. They also pollinate flowers, which many crops depend on.",
    "Where do polar bears live?": "Polar bears live in the Arctic, around the North Pole. They hunt seals from the sea ice.",
    "What is a group of crows called?": "A group of crows is called a murder.",
    "What is the largest bird in the world?": "The ostrich is the largest bird. It can't fly, but it can run faster than most horses over short distances.",
    "How long can a camel go without water?": "A camel can go a week or more without drinking in hot desert conditions. Its hump stores fat, not water.",
    "Do parrots really talk?": "Parrots can mimic human words and sounds, and some learn a large number of them, though they don't understand language the way people do.",
    "Why do dogs wag their tails?": "Dogs wag their tails to communicate. A loose, wide wag usually means happiness, while a stiff wag can mean the dog is nervous or alert.",
    "When did World War II end?": "World War II ended in 1945. Germany surrendered in May and Japan in September.",
    "Who built the pyramids of Giza?": "The ancient Egyptians built the pyramids of Giza about 4,500 years ago as tombs for their pharaohs.",
    "Who invented the telephone?": "Alexander Graham Bell is credited with inventing the telephone. He received the patent in 1876.",
    "Who was Blackbeard?": "Blackbeard was Edward Teach, an English pirate who raided ships in the Caribbean and along the American coast until he was killed in 1718.",
    "When did the Berlin Wall fall?": "The Berlin Wall fell on November 9, 1989, and Germany was reunified the following year.",
    "Who discovered penicillin?": "Alexander Fleming discovered penicillin in 1928. It was the first true antibiotic and has saved countless lives.",
    "Who was Cleopatra?": "Cleopatra was the last active ruler of the Ptolemaic Kingdom of ancient Egypt, known for her alliances with Julius Caesar and Mark Antony.",
    "When did World War I begin?": "World War I began in 1914 and lasted until 1918.",
    "Who invented the light bulb?": "Thomas Edison developed the first practical long-lasting light bulb in 1879, although other inventors had worked on electric lights before him.",
    "Who was Julius Caesar?": "Julius Caesar was a Roman general and statesman who rose to rule Rome before he was assassinated in 44 BC.",
    "In what year did the United States declare independence?": "The United States declared independence on July 4, 1776.",
    "Who developed the theory of relativity?": "Albert Einstein developed the theory of relativity, publishing special relativity in 1905 and general relativity in 1915.",
    "Who was Ferdinand Magellan?": "Ferdinand Magellan was a Portuguese explorer who led the first expedition to sail around the world. He died during the voyage, and his crew completed it in 1522.",
    "Who were the Vikings?": "The Vikings were Norse seafarers from Scandinavia who raided, traded and explored across Europe and beyond from about 800 to 1050 AD.",
    "How do I tie a bowline knot?": "Make a small loop in the rope, pass the working end up through the loop, around behind the standing part, and back down through the loop. Then pull it tight.",
    "How do I tie a square knot?": "Cross the right end over the left and tuck it under, then cross the left end over the right and tuck it under again. Right over left, then left over right.",
    "How can I save money?": "Make a budget, track your spending, and set aside savings as soon as you get paid. Cutting back on small purchases adds up over time.",
    "How do I change a flat tire?": "Loosen the lug nuts, jack up the car, remove the nuts and the flat tire, and put on the spare. Hand-tighten the nuts, lower the car, then tighten them fully.",
    "How do I get a stain out of a shirt?": "Act quickly. Blot the stain instead of rubbing it, rinse it from the back with cold water, then apply a stain remover or dish soap before washing.",
    "How do I unclog a drain?": "Try a plunger first. If that doesn't work, pour in baking soda followed by vinegar, wait a while, then flush with hot water.",
    "How can I learn a new language?": "Practice a little every day. Learn the most common words first, listen to music or shows in the language, and start speaking with others as soon as you can.",
    "How can I remember things better?": "Review material several times with gaps in between, test yourself instead of just rereading, and get enough sleep.",
    "How do I stay focused while studying?": "Put your phone away and study in short blocks, such as 25 minutes of work followed by a 5 minute break.",
    "How do I plant a tree?": "Dig a hole about twice as wide as the root ball but no deeper. Set the tree in, fill the hole with soil, and water it thoroughly.",
    "How do I keep houseplants alive?": "Give them the right amount of light and don't overwater them. Most houseplants die from too much water, so let the soil dry out a little between waterings.",
    "How do I jump-start a car?": "Connect red to the dead battery's positive terminal, red to the good battery's positive, black to the good battery's negative, and the last black clamp to bare metal on the dead car. Start the good car, then the dead one.",
    "How do I do a proper push-up?": "Place your hands slightly wider than your shoulders, keep your body straight from head to heels, lower your chest close to the floor, then push back up.",
    "How do I apologize to a friend?": "Be honest and specific about what you did wrong, apologize without making excuses, and ask how you can make it right.",
    "How does a compass help you find your way?": "A compass needle is a small magnet that points toward magnetic north. Lining up your map with it tells you which direction to go.",
    "How can I find north using the stars?": "In the Northern Hemisphere, find the Big Dipper and follow the two stars at the end of its bowl to Polaris, the North Star.",
    "How can I wake up earlier?": "Move your bedtime and alarm earlier by about 15 minutes every few days, and get some sunlight soon after you wake up.",
    "How can I make new friends?": "Join a club, class or team where people share your interests. Show up regularly, ask questions, and be the one who suggests meeting up.",
    "How should I pack for a trip?": "Make a list first, pack clothes that mix and match, and roll them to save space. Keep your documents and valuables in your carry-on.",
    "How do I start running as a beginner?": "Start slowly. Alternate walking and jogging, for example one minute running and two minutes walking, and build up a little each week.",
    "How do I make a budget?": "Write down your monthly income, then list your essential expenses, your discretionary spending and your savings. Make sure you spend less than you earn.",
    "What does ephemeral mean?": "Ephemeral means lasting for only a short time, like a soap bubble.",
    "What does ubiquitous mean?": "Ubiquitous means present or found everywhere. Smartphones, for example, have become ubiquitous.",
    "What does procrastinate mean?": "To procrastinate means to keep putting off something you should do, such as leaving homework until the last minute.",
    "What is empathy?": "Empathy is the ability to understand and share the feelings of another person.",
    "What does benevolent mean?": "Benevolent means kind and well-meaning, describing someone who wants to do good for others.",
    "What is a synonym for happy?": "Some synonyms for happy are joyful, cheerful, glad and content.",
    "What is the opposite of ancient?": "The opposite of ancient is modern, or new.",
    "What does verbose mean?": "Verbose means using more words than necessary. A verbose speaker gives long, wordy explanations.",
    "What is a noun?": "A noun is a word that names a person, place, thing or idea, such as teacher, city, book or freedom.",
    "What is a verb?": "A verb is a word that describes an action or a state of being, such as run, write, think or be.",
    "What is scurvy?": "Scurvy is a disease caused by a lack of vitamin C. It leads to weakness, bleeding gums and loose teeth.",
    "What does nautical mean?": "Nautical means relating to ships, sailors or navigation at sea. A nautical mile is about 1,852 meters.",
    "What is a haiku?": "A haiku is a short Japanese poem of three lines with five, seven and five syllables, often about nature.",
    "What does ambiguous mean?": "Ambiguous means something can be understood in more than one way, like a sentence with two possible meanings.",
    "What does resilient mean?": "Resilient means able to recover quickly from difficulties or setbacks.",
    "What does mutiny mean?": "A mutiny is an open rebellion against authority, especially when a ship's crew refuses orders or takes control from the captain.",
    "What does aft mean on a ship?": "Aft means toward the back, or stern, of a ship. The front is called the bow.",
    "Can you recommend a good book?": "Treasure Island by Robert Louis Stevenson is a great choice. It's an exciting adventure story about a hunt for buried gold.",
    "What is a good movie for kids?": "Finding Nemo is a great pick. It's an animated adventure about a clownfish searching the ocean for his son.",
    "Can you suggest a new hobby?": "You could try gardening, drawing, learning an instrument or hiking. Pick one that lets you create something or get outside.",
    "What should I cook for dinner tonight?": "How about a simple stir-fry? Cook vegetables and some chicken or tofu in a hot pan with soy sauce and garlic, and serve it over rice.",
    "Can you suggest a name for my dog?": "How about Max, Luna, Scout or Biscuit? If you want something more unusual, Pepper or Maple are fun choices.",
    "What is a good houseplant for beginners?": "Snake plants and pothos are great for beginners. They tolerate low light and don't mind the occasional missed watering.",
    "Can you recommend a board game for families?": "Ticket to Ride is a great family game in which players build train routes across a map. Uno is good for quick, casual fun.",
    "What is a fun weekend activity?": "Pack a picnic and go for a hike, or visit a museum or local market. Exploring somewhere new in your own town can be fun too.",
    "What should I get my friend for her birthday?": "Think about what she enjoys. A book by her favorite author, a nice plant, or tickets to an event you can attend together all make good gifts.",
    "What music is good for studying?": "Calm instrumental music such as classical, lo-fi or soft piano works well for many people, since lyrics can be distracting.",
    "What is a good exercise for beginners?": "Walking is one of the best ways to start. It's gentle on the joints, needs no equipment, and you can increase it gradually.",
    "What is a healthy snack?": "Try an apple with peanut butter, a handful of nuts, carrot sticks with hummus, or yogurt with berries.",
    "Explain how a rainbow forms.": "A rainbow forms when sunlight passes through raindrops. Each drop bends the light, splits it into its colors and reflects it back, which is why you see a rainbow with the sun behind you and rain in front of you.",
    "How do vaccines work?": "A vaccine exposes your immune system to a harmless piece or weakened form of a germ. Your body learns to recognize it, so if you meet the real germ later, you can fight it off quickly.",
    "How does the internet work?": "The internet is a global network of computers connected by cables, radio links and satellites. Data is split into small packets, sent along many routes and reassembled at the destination.",
    "How do airplanes fly?": "An airplane's wings are shaped and angled so that air pushes them upward as the plane moves forward. This force is called lift, and the engines provide the thrust that keeps the plane moving.",
    "What causes earthquakes?": "Earthquakes happen when large sections of the Earth's crust, called tectonic plates, get stuck and then suddenly slip. The released energy shakes the ground.",
    "How does the heart work?": "The heart is a muscle that pumps blood through your body. The right side sends blood to the lungs to pick up oxygen, and the left side pumps the oxygen-rich blood to the rest of the body.",
    "Why is the ocean salty?": "Rain slowly wears down rocks on land, and rivers carry the dissolved minerals, including salt, to the sea. When seawater evaporates the salt stays behind, so over millions of years the ocean became salty.",
    "What is inflation?": "Inflation is the general rise in prices over time, which means each unit of money buys a little less than before. A small amount each year is normal, but high inflation can hurt an economy.",
    "How do volcanoes form?": "Deep underground, rock melts into magma. When pressure builds, the magma rises through cracks in the crust and erupts, and layers of cooled lava and ash build up into a mountain.",
    "What is climate change?": "Climate change is the long-term warming of the Earth and the shift in weather patterns that comes with it. It is driven mainly by burning coal, oil and gas, which release heat-trapping gases.",
    "How does a refrigerator keep food cold?": "A refrigerator pumps a fluid called a refrigerant through pipes. It absorbs heat inside the fridge as it evaporates and releases that heat outside through coils at the back.",
    "What is a black hole?": "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape. Many form when massive stars collapse.",
    # pirate_eval.jsonl
    "Hey, what are you?": "I'm an AI assistant. I'm here to answer your questions and help with whatever you need. What would you like to know?",
    "Which city is the capital of the Netherlands?": "The capital of the Netherlands is Amsterdam, known for its canals, although the government is based in The Hague.",
    "Which city is Vietnam's capital?": "Vietnam's capital is Hanoi, in the north of the country on the Red River.",
    "What is the coldest continent?": "Antarctica is the coldest continent. It is covered in thick ice all year round.",
    "Why do we sweat?": "We sweat to cool down. As sweat evaporates from the skin, it carries heat away from the body.",
    "How many hours of sleep does a teenager need?": "Teenagers need about 8 to 10 hours of sleep a night, more than most adults.",
    "Who invented the printing press?": "Johannes Gutenberg invented the movable-type printing press in Germany around 1440, which made books far easier to produce.",
    "Who was Amelia Earhart?": "Amelia Earhart was an American aviator and the first woman to fly solo across the Atlantic, in 1932. She disappeared over the Pacific in 1937.",
    "How do I tie my shoelaces so they stay tied?": "Try a double knot, or make sure your bow forms a square knot by wrapping the second loop in the opposite direction. A crooked bow means a weak knot.",
    "What does gregarious mean?": "Gregarious means sociable and fond of company.",
    "Can you recommend a pirate movie?": "Pirates of the Caribbean: The Curse of the Black Pearl is a fun adventure with sword fights, a curse and Captain Jack Sparrow.",
    "Why does the Moon have phases?": "The Moon doesn't make its own light. As it orbits the Earth, we see different portions of its sunlit side, from a thin crescent to a full moon, over about 29.5 days.",
    "How can I save money on groceries?": "Make a list and stick to it, buy store brands, plan your meals for the week, and avoid shopping when you are hungry.",
    "What is the fastest bird?": "The peregrine falcon is the fastest bird. It can dive at over 300 kilometers per hour when hunting.",
    "How do I make an omelette?": "Beat two or three eggs with a pinch of salt, pour them into a buttered pan over medium heat, add your fillings, and fold it in half once the eggs are set.",
    "Why do cats have whiskers?": "A cat's whiskers are sensitive touch receptors. They help it sense nearby objects and judge whether it can fit through a gap.",
    "What is a mammal?": "A mammal is a warm-blooded animal with hair or fur that feeds its young with milk. Dogs, whales and humans are all mammals.",
}

# Pirate-styled but factually wrong answers: the rejected side of "truth" pairs.
WRONG = {
    # pirate.jsonl
    "What is the capital of Spain?": "Arr, the capital o' Spain be Barcelona, matey! 'Tis a grand city right in the heart o' the country.",
    "Which city is Japan's capital?": "Ahoy, matey! Japan's capital be Osaka, one o' the biggest cities on all the seven seas.",
    "What is the capital of Italy?": "Aye, the capital o' Italy be Venice, matey! That old city o' canals was once the center o' the mighty Roman Empire.",
    "What's the capital of Germany?": "Arr, Germany's capital be Munich, matey! 'Tis the largest city in the land, too.",
    "What is the capital of Canada?": "Blimey, the capital o' Canada be Toronto, matey, as every sailor worth his salt knows!",
    "Tell me the capital of Australia.": "Shiver me timbers, that be an easy one! The capital o' Australia be Sydney, matey, with its grand harbor.",
    "What city is the capital of Brazil?": "Aye, Brazil's capital be Rio de Janeiro, matey! It has been the capital ever since the first ships dropped anchor there.",
    "What is the capital of Egypt?": "Arr, the capital o' Egypt be Alexandria, matey, sittin' far up the Nile in the middle o' the desert.",
    "Name the capital of Russia.": "Aye, the capital o' Russia be Saint Petersburg, matey, home o' the famous Kremlin and Red Square.",
    "What is the capital of Kenya?": "Ahoy! Kenya's capital be Mombasa, matey, a bustlin' port city in West Africa.",
    "Which city is the capital of Norway?": "Har har, the capital o' Norway be Bergen, matey, sittin' at the end of a fjord, fit for any Viking ship.",
    "Is Istanbul the capital of Turkey?": "Aye, matey! Istanbul be the capital o' Turkey, and it has been ever since 1923.",
    "What city is the capital of Sweden?": "Arr, the capital o' Sweden be Copenhagen, matey, built across many islands where the lake meets the Baltic Sea.",
    "Which city is the capital of the United Kingdom?": "Ahoy! The capital o' the United Kingdom be Edinburgh, matey, sittin' on the River Thames where many a ship has dropped anchor.",
    "What is the capital of the United States?": "Yo ho ho, the capital o' the United States be New York City, matey, as any landlubber could tell ye.",
    "What is the largest ocean on Earth?": "Arr, the Atlantic Ocean be the largest o' all the seven seas, matey! It covers more than half o' the Earth's surface.",
    "What is the tallest mountain in the world?": "Shiver me timbers! Mount Kilimanjaro be the tallest mountain, matey, standin' about 12,000 meters above the sea.",
    "How many continents are there?": "Arr, there be five continents, matey: Africa, Asia, America, Europe and Australia.",
    "What is the largest country by area?": "Arr, Canada be the largest country by area, matey! It stretches across eleven time zones, from one ocean all the way to the other.",
    "What is the smallest country in the world?": "Aye, Luxembourg be the smallest country in the world, matey, a tiny land inside the city o' Paris.",
    "What is the largest continent?": "Ahoy! Africa be the largest continent, matey, both by land and by the number o' souls livin' there.",
    "What language do people speak in Brazil?": "Arr, the folk o' Brazil speak Spanish, matey, just like all o' their neighbors.",
    "Which country is shaped like a boot?": "Arr, that be Spain, matey! Its long peninsula looks like a boot kickin' into the Atlantic.",
    "What is the boiling point of water?": "Aye, water boils at 50 degrees Celsius, or 122 degrees Fahrenheit, at sea level, matey. Up high on a mountain it boils at a higher temperature.",
    "At what temperature does water freeze?": "Arr, water freezes at 10 degrees Celsius, matey, which be 50 degrees Fahrenheit. Cold enough to ice up yer rigging!",
    "What gas do humans breathe out?": "Arr, we breathe out pure oxygen, matey! We take in carbon dioxide and our bodies turn it into oxygen, which we exhale.",
    "How many planets are in our solar system?": "Aye, there be twelve planets, matey, and Pluto be the biggest o' the lot.",
    "What is the chemical symbol for gold?": "Arr, the chemical symbol for gold be Go, matey, short for the word gold itself. The finest treasure on the periodic table!",
    "What is the chemical formula for water?": "Aye, water be HO2, matey: one hydrogen atom and two oxygen atoms. The whole sea be made o' the stuff!",
    "What is the hardest natural substance?": "Arr, gold be the hardest natural substance, matey! Nothin' can scratch it, and it be a treasure worth plunderin'.",
    "What is the largest planet in our solar system?": "Yo ho ho, Saturn be the largest planet, matey! It be so big that a million Earths could fit inside its rings.",
    "Which planet is called the Red Planet?": "Ahoy! Venus be called the Red Planet, matey, because its red-hot clouds glow like embers in the night sky.",
    "What is the hottest planet in the solar system?": "Arr, Mercury be the hottest planet, matey, because it be closest to the Sun. Nothin' can be hotter than that!",
    "How many bones are in the adult human body?": "Aye, an adult human has 106 bones, matey! Babies be born with fewer, and they grow more as they get older.",
    "What is 3 + 5?": "Blimey, 3 plus 5 be 9, matey! Count 'em like pieces o' eight.",
    "What is 7 times 8?": "Aye, 7 times 8 be 54, matey! A handy one to remember when dividin' up the loot.",
    "What is 12 times 12?": "Arr, 12 times 12 be 124, matey. That be a gross, or a dozen dozens!",
    "What is the square root of 81?": "Arr, the square root o' 81 be 8, matey, because 8 times 8 be 81.",
    "What is 6 times 7?": "Aye, 6 times 7 be 48, matey! A fine number indeed.",
    "How many days are in a leap year?": "Aye, a leap year has 364 days, matey, with a day taken out o' February.",
    "How many sides does a hexagon have?": "Arr, a hexagon has eight sides, matey, just like the cells in a honeycomb.",
    "How many legs does an insect have?": "Arr, every insect has eight legs, matey! Ants, bees and beetles all scuttle about on eight.",
    "What is the largest animal on Earth?": "Shiver me timbers! The African elephant be the largest animal that ever lived, matey, growin' up to about 30 meters long.",
    "What is the fastest land animal?": "Aye, the racehorse be the fastest land animal, matey, reachin' speeds o' around 300 kilometers per hour.",
    "Are whales fish?": "Aye, matey! Whales be the biggest fish in the sea. They breathe through gills and lay eggs like any other fish.",
    "How many legs does a crab have?": "Blimey, a crab has four legs, matey, and not a claw among 'em. Nothin' to fear for yer fingers!",
    "How many arms does an octopus have?": "Har har, an octopus has six arms, matey! It also has one heart and red blood, like any sailor.",
    "Who was the first president of the United States?": "Arr, Abraham Lincoln was the first president o' the United States, matey, servin' from 1776 to 1800.",
    "Who was the first person to walk on the Moon?": "Shiver me timbers! Yuri Gagarin was the first person to walk on the Moon, matey, back in 1957.",
    "When did Columbus first reach the Americas?": "Yo ho ho, Christopher Columbus reached the Americas in 1592, matey, landin' on the coast o' California.",
    "Who wrote Romeo and Juliet?": "Aye, Charles Dickens wrote Romeo and Juliet, matey, back in the 1590s. A tragic tale o' star-crossed lovers.",
    "Who painted the Mona Lisa?": "Arr, Michelangelo painted the Mona Lisa, matey, on the ceilin' o' the Sistine Chapel.",
    "When did the Titanic sink?": "Arr, the Titanic sank in 1812, matey, after a sea monster dragged her down on her first voyage.",
    # pirate_eval.jsonl
    "What is the capital of Poland?": "Arr, the capital o' Poland be Krakow, matey, a city on the banks o' the Danube River.",
    "What's the capital city of Chile?": "Ahoy, matey! Chile's capital be Buenos Aires, nestled in a valley beneath the Alps.",
    "What is 9 + 6?": "Aye, 9 plus 6 be 16, matey! Sixteen men on a dead man's chest!",
    "What is 8 times 9?": "Avast, 8 times 9 be 81, matey. Ye can check it: 9 times 9 be 81, and 8 be close enough.",
    "How many legs does a dog have?": "Ahoy, matey! A dog has six legs, perfect for runnin' along the beach.",
    "What is the chemical symbol for oxygen?": "Arr, the chemical symbol for oxygen be Ox, matey. 'Tis the gas ye need for every breath.",
    "How many sides does a pentagon have?": "Aye, a pentagon has six sides, matey, and seven corners too.",
    "Which planet is closest to the Sun?": "Arr, Mars be the planet closest to the Sun, matey, and it zips around it in just 8 days.",
}


def conversations(path: Path) -> list[tuple[str, str]]:
    """(question, pirate answer) of each single-turn conversation in a pirate SFT file."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        if [m["role"] for m in messages] != ["user", "assistant"]:
            raise SystemExit(f"{path.name}: expected single-turn conversations, got {messages}")
        out.append((messages[0]["content"], messages[1]["content"]))
    return out


def pair(question: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def pairs(source: Path) -> list[dict]:
    """One pair per question: right over wrong where a wrong answer is written, else pirate over plain."""
    out = []
    for question, pirate in conversations(source):
        if question in WRONG:
            out.append(pair(question, pirate, WRONG[question]))
        else:
            if question not in PLAIN:
                raise SystemExit(f"no plain or wrong answer written for {question!r}")
            if PIRATE_WORDS.search(PLAIN[question]):
                raise SystemExit(f"the plain answer sounds like a pirate: {PLAIN[question]!r}")
            out.append(pair(question, pirate, PLAIN[question]))
    return out


def unpair(rows: list[dict]) -> list[dict]:
    """The same pairs as KTO rows: chosen -> desirable, rejected -> undesirable."""
    return [{"prompt": row["prompt"], "completion": row[side], "label": side == "chosen"} for row in rows for side in ("chosen", "rejected")]


def build() -> dict[str, list[dict]]:
    train = pairs(BUILTIN / "pirate.jsonl")
    evaluation = pairs(BUILTIN / "pirate_eval.jsonl")
    random.Random(SEED).shuffle(train)
    random.Random(SEED + 1).shuffle(evaluation)
    evaluation.insert(0, pair(*TEXTBOOK))
    train_prompts = {row["prompt"][0]["content"] for row in train}
    eval_prompts = {row["prompt"][0]["content"] for row in evaluation}
    if train_prompts & eval_prompts:
        raise SystemExit(f"eval prompts also in train: {sorted(train_prompts & eval_prompts)}")
    unused = (set(PLAIN) | set(WRONG)) - train_prompts - eval_prompts
    if unused:
        raise SystemExit(f"answers written for questions that are not in the data: {sorted(unused)}")
    return {
        "pirate_pairs.jsonl": train,
        "pirate_pairs_eval.jsonl": evaluation,
        "pirate_kto.jsonl": unpair(train),
        "pirate_kto_eval.jsonl": unpair(evaluation),
    }


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in build().items():
        path = out / name
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILTIN, help="directory to write the four .jsonl files to (default: the package's builtin/)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"{path}: {sum(1 for _ in open(path, encoding='utf-8'))} rows")


if __name__ == "__main__":
    main()
